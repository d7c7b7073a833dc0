"""A small static file server for the demo mirrors.

It answers like nginx with ``autoindex on; autoindex_exact_size on; autoindex_localtime off``:
directory listings in nginx's exact HTML layout (so the mirror scanner reads them as it reads a
real nginx mirror), and files with Content-Length, Last-Modified and single byte ranges.

Threads from the standard library rather than another asyncio server: it runs beside uvicorn in
the same process without sharing its event loop, and ``close`` stops it from any thread.
Requests are confined to the root: ``..`` segments, NUL and backslashes are refused, and a
symlink whose target leaves the root is answered 404.
"""

from __future__ import annotations

import contextlib
import errno
import mimetypes
import os
import re
import socket
import stat
import sys
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import BinaryIO
from urllib.parse import quote, unquote, urlsplit

NAME_WIDTH = 50  # nginx's NGX_HTTP_AUTOINDEX_NAME_LEN
CHUNK = 256 * 1024
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_RANGE = re.compile(r"bytes=(\d*)-(\d*)\Z")


@dataclass(frozen=True, slots=True)
class ListingEntry:
    name: str
    is_dir: bool
    size: int
    mtime: int  # POSIX seconds


def _nginx_time(mtime: int) -> str:
    t = datetime.fromtimestamp(mtime, UTC)
    return f"{t.day:02d}-{_MONTHS[t.month - 1]}-{t.year} {t.hour:02d}:{t.minute:02d}"


def _escape(text: str) -> str:
    # nginx's NGX_ESCAPE_HTML: &, <, > and " (not the apostrophe).
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def render_listing(url_path: str, entries: Iterable[ListingEntry]) -> str:
    """nginx autoindex HTML for the directory at ``url_path`` (decoded, ending in "/").

    Directories first, then files, each group in byte order; names longer than 50 characters
    are cut to 47 plus "..>" in the text (the href always has the full name). Byte-identical
    to nginx 1.22 output for the same entries (a test compares it with a captured page).
    """
    title = _escape(url_path)
    out = [
        f"<html>\r\n<head><title>Index of {title}</title></head>\r\n<body>\r\n"
        f'<h1>Index of {title}</h1><hr><pre><a href="../">../</a>\r\n'
    ]
    ordered = sorted(entries, key=lambda e: (not e.is_dir, e.name.encode("utf-8", "replace")))
    for e in ordered:
        shown = e.name + ("/" if e.is_dir else "")
        href = quote(e.name, safe="") + ("/" if e.is_dir else "")
        if len(shown) > NAME_WIDTH:
            text, pad = _escape(shown[: NAME_WIDTH - 3]) + "..&gt;", ""
        else:
            # nginx cuts by characters but pads by bytes (a quirk scanners must live with).
            width = len(shown.encode("utf-8", "surrogateescape"))
            text, pad = _escape(shown), " " * max(0, NAME_WIDTH - width)
        size = f"{'-':>19}" if e.is_dir else f"{e.size:>19}"
        out.append(f'<a href="{href}">{text}</a>{pad} {_nginx_time(e.mtime)} {size}\r\n')
    out.append("</pre><hr></body>\r\n</html>\r\n")
    return "".join(out)


def resolve(root: Path, raw_path: str) -> Path | None:
    """The file or directory a request path names under ``root`` (resolved), or None.

    None for anything that is not a plain path below the root: undecodable escapes, NUL,
    backslashes, ``.``/``..`` segments, or symlinks pointing outside.
    """
    try:
        decoded = unquote(urlsplit(raw_path).path, errors="strict")
    except (UnicodeDecodeError, ValueError):
        return None
    if not decoded.startswith("/") or "\x00" in decoded or "\\" in decoded:
        return None
    segments = [s for s in decoded.split("/")[1:] if s]
    if any(s in (".", "..") for s in segments):
        return None
    real = Path(os.path.realpath(root.joinpath(*segments)))
    if real != root and not real.is_relative_to(root):
        return None
    return real


def parse_range(header: str, size: int) -> tuple[int, int] | bool | None:
    """A single ``bytes=`` range as inclusive ``(first, last)``.

    None: no usable range (malformed or several ranges), serve the whole file;
    False: not satisfiable (416).
    """
    m = _RANGE.match(header.strip())
    if m is None or (not m[1] and not m[2]):
        return None
    if not m[1]:  # suffix range: the last N bytes
        length = int(m[2])
        if length == 0:
            return False
        return max(0, size - length), size - 1
    first = int(m[1])
    if m[2] and int(m[2]) < first:
        return None  # syntactically invalid: ignore the header
    if first >= size:
        return False
    return first, min(int(m[2]), size - 1) if m[2] else size - 1


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    root: Path

    def handle_error(self, request: object, client_address: object) -> None:
        # Clients that drop a kept-alive connection are normal; anything else is a bug.
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "mirrorhub-demo-mirror"
    sys_version = ""
    timeout = 30

    def do_GET(self) -> None:
        self._serve(body=True)

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the demo's terminal is for the dispatcher; mirrors stay quiet

    def _serve(self, body: bool) -> None:
        root = self.server.root
        target = resolve(root, self.path)
        if target is None:
            self._plain(HTTPStatus.BAD_REQUEST, "bad path\n", body)
            return
        try:
            st = target.stat()
        except OSError:
            self._plain(HTTPStatus.NOT_FOUND, "not found\n", body)
            return
        url_path = urlsplit(self.path).path
        if stat.S_ISDIR(st.st_mode):
            if not url_path.endswith("/"):
                self.send_response(HTTPStatus.MOVED_PERMANENTLY)
                self.send_header("Location", url_path + "/")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self._listing(target, unquote(url_path), body)
        elif stat.S_ISREG(st.st_mode) and not url_path.endswith("/"):
            self._file(target, st, body)
        else:
            self._plain(HTTPStatus.NOT_FOUND, "not found\n", body)

    def _listing(self, directory: Path, url_path: str, body: bool) -> None:
        entries = []
        with os.scandir(directory) as it:
            for entry in it:
                try:
                    st = entry.stat()  # follows symlinks, as nginx does
                except OSError:
                    continue
                if entry.name.startswith(".") or not (
                    stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)
                ):
                    continue
                is_dir = stat.S_ISDIR(st.st_mode)
                entries.append(ListingEntry(entry.name, is_dir, st.st_size, int(st.st_mtime)))
        data = render_listing(url_path, entries).encode("utf-8", "surrogateescape")
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _file(self, path: Path, st: os.stat_result, body: bool) -> None:
        size, mtime = st.st_size, int(st.st_mtime)
        last_modified = formatdate(mtime, usegmt=True)
        since = self.headers.get("If-Modified-Since")
        if since and not self.headers.get("Range") and _not_modified(since, mtime):
            self.send_response(HTTPStatus.NOT_MODIFIED)
            self.send_header("Last-Modified", last_modified)
            self.end_headers()
            return
        first, last, status = 0, size - 1, HTTPStatus.OK
        header = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if header and (if_range is None or if_range == last_modified):
            wanted = parse_range(header, size)
            if wanted is False:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if isinstance(wanted, tuple):
                first, last = wanted
                status = HTTPStatus.PARTIAL_CONTENT
        kind = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        try:
            f = path.open("rb")
        except OSError:
            self._plain(HTTPStatus.FORBIDDEN, "forbidden\n", body)
            return
        with f:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(last - first + 1))
            self.send_header("Last-Modified", last_modified)
            self.send_header("ETag", f'"{mtime:x}-{size:x}"')
            self.send_header("Accept-Ranges", "bytes")
            if status == HTTPStatus.PARTIAL_CONTENT:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.end_headers()
            if body:
                self._copy(f, first, last - first + 1)

    def _copy(self, f: BinaryIO, offset: int, length: int) -> None:
        f.seek(offset)
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while length > 0:
                chunk = f.read(min(CHUNK, length))
                if not chunk:
                    break  # the file shrank under us; the client sees a short body
                self.wfile.write(chunk)
                length -= len(chunk)

    def _plain(self, status: HTTPStatus, text: str, body: bool) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body:
            self.wfile.write(data)


def _not_modified(since: str, mtime: int) -> bool:
    try:
        when = parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False
    return when.tzinfo is not None and mtime <= when.timestamp()


class MirrorServer:
    """One demo mirror: serves ``root`` on ``host:port`` from a background thread.

    ``port`` is tried first; when it is taken the server takes any free port on ``host``.
    """

    def __init__(self, root: Path, host: str, port: int = 0) -> None:
        self.root = Path(os.path.realpath(root))
        try:
            self._httpd = _Server((host, port), _Handler)
        except OSError as exc:
            if port == 0 or exc.errno != errno.EADDRINUSE:
                raise
            self._httpd = _Server((host, 0), _Handler)
        self._httpd.root = self.root
        self.host = host
        self.port: int = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.2},
            name=f"mirror-{host}:{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> MirrorServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def port_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        with socket.create_server((host, port), family=family):
            return True
    except OSError:
        return False
