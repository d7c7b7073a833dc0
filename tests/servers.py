"""Real servers on loopback for tests: nginx autoindex, an rsync daemon, a scripted listing server.

Each helper is a context manager that starts the server, waits until it accepts connections,
yields its base URL and stops it on exit (also when the test fails). Use a distinct loopback
address per mirror (127.0.0.2, 127.0.0.3, ...) so clients see different hosts; ports are
picked free on that address.

    with nginx_autoindex(tree, "127.0.0.2", workdir=tmp_path / "ngx") as url: ...
    with rsync_daemon({"pub": tree}, "127.0.0.3", workdir=tmp_path / "rs") as url: ...
    with listing_server("127.0.0.4", root=tree, shift=3600) as url: ...

``make_tree`` writes files with exact sizes and mtimes; ``readable`` opens a tree up for
nginx's unprivileged workers (tmp_path directories are 0700).
"""

from __future__ import annotations

import calendar
import contextlib
import html
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.conftest import require

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
RSYNC = shutil.which("rsync") or "/usr/bin/rsync"

# --- trees ----------------------------------------------------------------------------------


def make_tree(root: Path, files: Mapping[str, tuple[int, int] | tuple[bytes, int]]) -> Path:
    """Write ``{"a/b.iso": (size or content, mtime)}`` under ``root``; returns ``root``."""
    for rel, (body, mtime) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body if isinstance(body, bytes) else b"x" * body)
        os.utime(path, (mtime, mtime))
    return readable(root)


def readable(root: Path) -> Path:
    """Make ``root`` and its parents up to / traversable and its tree world-readable."""
    for parent in [root, *root.parents]:
        with contextlib.suppress(PermissionError):
            parent.chmod(parent.stat().st_mode | 0o055)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            p = Path(dirpath, name)
            st = p.stat()  # keep directory mtimes: listings show them
            p.chmod(0o755)
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
        for name in filenames:
            Path(dirpath, name).chmod(0o644)
    return root


# --- ports and readiness --------------------------------------------------------------------


def free_port(address: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    address: str, port: int, proc: subprocess.Popen[bytes] | None = None, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {err}")
        with contextlib.suppress(OSError), socket.create_connection((address, port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on {address}:{port} after {timeout} s")


@contextlib.contextmanager
def _process(
    args: list[str], address: str, port: int, env: Mapping[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=dict(env) if env is not None else None,
        start_new_session=True,  # our own process group: stopping it reaches the workers
    )
    try:
        wait_for_port(address, port, proc)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        if proc.stderr:
            proc.stderr.close()


# --- nginx ----------------------------------------------------------------------------------


@contextlib.contextmanager
def nginx_autoindex(
    root: Path,
    address: str,
    *,
    workdir: Path,
    tz: str | None = None,
    exact_size: bool = True,
    extra: str = "",
    port: int | None = None,
) -> Iterator[str]:
    """nginx serving ``root`` with ``autoindex on``; yields ``http://address:port/``.

    ``port`` restarts a server on the port an earlier one had (default: a free port).

    ``tz`` (a TZ value such as ``"Etc/GMT-1"``, i.e. UTC+1) turns on ``autoindex_localtime``
    with that zone, so the listing shows shifted times as misconfigured mirrors do.
    ``extra`` is pasted into the server block (e.g. a ``location`` with a redirect).
    """
    require(os.access(NGINX, os.X_OK), f"nginx not found at {NGINX}")
    workdir.mkdir(parents=True, exist_ok=True)
    readable(root)
    port = port or free_port(address)
    conf = workdir / "nginx.conf"
    localtime = "on" if tz else "off"
    conf.write_text(
        f"""
user root;
worker_processes 1;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    server {{
        listen {address}:{port};
        server_name localhost;
        root {root};
        autoindex on;
        autoindex_localtime {localtime};
        autoindex_exact_size {"on" if exact_size else "off"};
        {extra}
    }}
}}
"""
    )
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    if tz:
        env["TZ"] = tz  # nginx keeps TZ from its environment for autoindex_localtime
    args = [NGINX, "-p", str(workdir), "-c", str(conf), "-g", "daemon off;"]
    with _process(args, address, port, env):
        yield f"http://{address}:{port}/"


# --- rsync daemon ---------------------------------------------------------------------------


@contextlib.contextmanager
def rsync_daemon(modules: Mapping[str, Path], address: str, *, workdir: Path) -> Iterator[str]:
    """``rsync --daemon`` with one read-only module per entry; yields ``rsync://addr:port/``."""
    require(os.access(RSYNC, os.X_OK), f"rsync not found at {RSYNC}")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port(address)
    sections = "".join(
        f"[{name}]\n    path = {path}\n    read only = yes\n    list = yes\n"
        for name, path in modules.items()
    )
    conf = workdir / "rsyncd.conf"
    conf.write_text(
        f"use chroot = no\nport = {port}\naddress = {address}\nuid = root\ngid = root\n"
        f"pid file = {workdir}/rsyncd.pid\nlog file = {workdir}/rsyncd.log\n"
        f"motd file = /dev/null\n\n{sections}"
    )
    args = [RSYNC, "--daemon", "--no-detach", f"--config={conf}"]
    with _process(args, address, port):
        yield f"rsync://{address}:{port}/"


# --- a scripted listing server (Apache mod_autoindex style) ---------------------------------


@dataclass
class Reply:
    """A canned answer: ``body`` may be an iterable of chunks (sent as they come)."""

    status: int = 200
    body: bytes | Iterable[bytes] = b""
    headers: dict[str, str] = field(default_factory=lambda: {"Content-Type": "text/html"})


Route = Callable[[str], Reply | None]  # request path (decoded) -> reply, or None to fall through


def apache_size(size: int) -> str:
    """Apache's ``apr_strfsize``: ``14``, ``1.0K``, ``10K``, ``118M``."""
    if size < 973:
        return f"{size:3d} "
    value = size
    for unit in "KMGTPE":
        remain = value & 1023
        value >>= 10
        if value >= 973:
            continue
        if value < 9 or (value == 9 and remain < 973):
            tenths = (remain * 10 + 512) >> 10
            if tenths >= 10:
                value, tenths = value + 1, 0
            return f"{value}.{tenths}{unit}"
        if remain >= 512:
            value += 1
        return f"{value:3d}{unit}"
    raise AssertionError("unreachable")


def apache_listing(
    url_path: str, entries: Iterable[tuple[str, bool, int, int]], *, exact: bool = True
) -> bytes:
    """An Apache ``FancyIndexing HTMLTable`` page: entries are (name, is_dir, size, mtime)."""
    rows = [
        '<tr><td valign="top"><img src="/icons/back.gif" alt="[PARENTDIR]"></td>'
        '<td><a href="../">Parent Directory</a></td><td>&nbsp;</td>'
        '<td align="right">  - </td><td>&nbsp;</td></tr>'
    ]
    for name, is_dir, size, mtime in entries:
        href = quote(name) + ("/" if is_dir else "")
        label = html.escape(name) + ("/" if is_dir else "")
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(mtime))
        shown = "  - " if is_dir else (f"{size}" if exact else apache_size(size))
        rows.append(
            f'<tr><td valign="top"><img src="/icons/unknown.gif" alt="[   ]"></td>'
            f'<td><a href="{href}">{label}</a></td><td align="right">{when}  </td>'
            f'<td align="right">{shown}</td><td>&nbsp;</td></tr>'
        )
    title = html.escape(url_path)
    return (
        '<!DOCTYPE HTML PUBLIC "-//W3C//DTD HTML 3.2 Final//EN">\n<html>\n <head>\n'
        f"  <title>Index of {title}</title>\n </head>\n <body>\n<h1>Index of {title}</h1>\n"
        '  <table>\n   <tr><th valign="top">&nbsp;</th><th><a href="?C=N;O=D">Name</a></th>'
        '<th><a href="?C=M;O=A">Last modified</a></th><th><a href="?C=S;O=A">Size</a></th>'
        '<th><a href="?C=D;O=A">Description</a></th></tr>\n'
        '   <tr><th colspan="5"><hr></th></tr>\n'
        + "\n".join(rows)
        + '\n   <tr><th colspan="5"><hr></th></tr>\n</table>\n</body></html>\n'
    ).encode()


def tree_route(root: Path, *, prefix: str = "/", shift: int = 0, exact: bool = True) -> Route:
    """Serve ``root`` under ``prefix``: Apache listings for directories, bytes for files.

    ``shift`` seconds are added to every listed time (a mirror whose listing is in local time).
    """

    def route(path: str) -> Reply | None:
        if not path.startswith(prefix):
            return None
        target = root / path[len(prefix) :]
        if ".." in Path(path).parts or not target.exists():
            return None
        if target.is_file():
            return Reply(200, target.read_bytes(), {"Content-Type": "application/octet-stream"})
        if not path.endswith("/"):
            return Reply(301, b"", {"Location": path + "/"})
        entries = []
        for child in sorted(target.iterdir()):
            st = child.stat()
            entries.append((child.name, child.is_dir(), st.st_size, int(st.st_mtime) + shift))
        return Reply(200, apache_listing(path, entries, exact=exact))

    return route


def endless_route(prefix: str) -> Route:
    """Directories below ``prefix`` that never end: each has a file and one sub-directory."""

    def route(path: str) -> Reply | None:
        if not path.startswith(prefix) or not path.endswith("/"):
            return None
        depth = path.count("/")
        entries = [(f"d{depth}", True, 0, 1_700_000_000), ("f.bin", False, 1, 1_700_000_000)]
        return Reply(200, apache_listing(path, entries))

    return route


def static_route(path: str, reply: Reply) -> Route:
    return lambda requested: reply if requested == path else None


class _Handler(BaseHTTPRequestHandler):
    routes: list[Route] = []
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes: without NODELAY, delayed ACKs cost 40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        path = unquote(urlsplit(self.path).path)
        for route in self.routes:
            reply = route(path)
            if reply is not None:
                break
        else:
            reply = Reply(404, b"not found\n", {"Content-Type": "text/plain"})
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if isinstance(reply.body, bytes):
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("Connection", "close")  # streamed body: its end is the close
        self.end_headers()
        self.close_connection = True
        with contextlib.suppress(OSError):
            for chunk in reply.body:
                self.wfile.write(chunk)
                self.wfile.flush()

    def log_message(self, format: str, *args: object) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False


@contextlib.contextmanager
def listing_server(
    address: str,
    *,
    root: Path | None = None,
    shift: int = 0,
    exact: bool = True,
    routes: Iterable[Route] = (),
) -> Iterator[str]:
    """A threaded server in this process; yields ``http://address:port/``.

    ``routes`` are tried first, in order; then ``root`` (if given) is served with Apache-style
    listings whose times are shifted by ``shift`` seconds.
    """
    all_routes = list(routes)
    if root is not None:
        all_routes.append(tree_route(root, shift=shift, exact=exact))
    handler = type("Handler", (_Handler,), {"routes": all_routes})
    server = _Server((address, 0), handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.daemon = True
    thread.start()
    try:
        yield f"http://{address}:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def utc(text: str) -> int:
    """``"2024-01-02 03:04:05"`` (UTC) as POSIX seconds."""
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


@pytest.fixture
def loopback() -> Iterator[Callable[[], str]]:
    """Hands out distinct loopback addresses 127.0.0.2, 127.0.0.3, ... within a test."""
    counter = iter(range(2, 255))
    yield lambda: f"127.0.0.{next(counter)}"
