"""``mirrorhub demo``: its mirror server, its sample trees, and the whole command end to end.

The end-to-end test runs ``python -m mirrorhub demo`` in a subprocess, replays the ``curl``
lines the demo printed (with httpx, from 127.0.0.1, which the demo trusts for
X-Forwarded-For), checks each does what the banner says, and stops the demo with SIGINT.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import httpx
import pytest

from mirrorhub.demo import tree
from mirrorhub.demo.mirror_server import ListingEntry, MirrorServer, parse_range, render_listing
from mirrorhub.demo.run import DOWNLOAD, EXAMPLES, MIRRORS, Example, prepare
from mirrorhub.errors import MirrorhubError
from mirrorhub.workers.listing import ListingFormat, parse_listing

FIXTURES = Path(__file__).parent / "workers" / "fixtures"
REPO = Path(__file__).resolve().parents[1]


def free_port(address: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((address, 0))
        port: int = sock.getsockname()[1]
        return port


# --- the listing is nginx's, byte for byte ----------------------------------------------------


# Captured from nginx 1.22 (autoindex on, autoindex_exact_size on), for when the parser's
# fixture directory is reorganised; tests/workers/fixtures holds more such pages.
NGINX_ISO_PAGE = (
    "<html>\r\n<head><title>Index of /pub/iso/</title></head>\r\n<body>\r\n"
    '<h1>Index of /pub/iso/</h1><hr><pre><a href="../">../</a>\r\n'
    '<a href="big-4.4e9.iso">big-4.4e9.iso</a>'
    "                                      02-Jan-2024 03:04          4400000000\r\n"
    '<a href="g3.iso">g3.iso</a>'
    "                                             15-Jul-2019 12:30          3221225472\r\n"
    "</pre><hr></body>\r\n</html>\r\n"
)


def _captured_pages() -> list[tuple[str, str]]:
    pages = [("inline /pub/iso/", NGINX_ISO_PAGE)]
    for path in sorted(FIXTURES.glob("nginx-exact-*.html")):
        pages.append((path.name, path.read_bytes().decode()))
    return pages


@pytest.mark.parametrize(("name", "captured"), _captured_pages(), ids=lambda v: v[:40])
def test_listing_is_byte_identical_to_nginx(name: str, captured: str) -> None:
    # The same entries must render to the same bytes as nginx, quirks included (long names
    # cut, UTF-8 names padded by bytes, dirs first).
    m = re.search(r"<title>Index of (.*?)</title>", captured)
    assert m is not None, name
    url_path = html.unescape(m[1])
    parsed = parse_listing(captured, "http://mirror.test" + quote(url_path))
    entries = [ListingEntry(e.name, e.is_dir, e.size_min, e.mtime or 0) for e in parsed.entries]
    assert entries, name
    assert render_listing(url_path, entries) == captured


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("demo-origin")
    tree.write_origin(root, "project/trace/mirrorhub")
    return root


@pytest.fixture
def server(sample: Path) -> Iterator[MirrorServer]:
    with MirrorServer(sample, "127.0.0.5") as srv:
        yield srv


def _tree_files(root: Path) -> dict[str, tuple[int, int]]:
    return {
        p.relative_to(root).as_posix(): (p.stat().st_size, int(p.stat().st_mtime))
        for p in root.rglob("*")
        if p.is_file()
    }


def test_listing_of_every_directory_parses_to_the_tree(sample: Path, server: MirrorServer) -> None:
    seen: dict[str, tuple[int, int]] = {}
    todo = [""]
    with httpx.Client(trust_env=False) as client:
        while todo:
            rel = todo.pop()
            url = server.url + "".join(
                httpx.URL("http://x/").copy_with(path="/" + rel).raw_path.decode()[1:]
            )
            page = client.get(url)
            assert page.status_code == 200
            listing = parse_listing(page.text, url)
            assert listing.format is ListingFormat.NGINX and not listing.truncated
            for entry in listing.entries:
                if entry.is_dir:
                    todo.append(f"{rel}{entry.name}/")
                else:
                    assert entry.size_min == entry.size_max and entry.mtime is not None
                    seen[rel + entry.name] = (entry.size_min, entry.mtime)
    assert seen == _tree_files(sample)  # exact sizes, and mtimes are whole minutes in UTC


# --- files: lengths, dates, ranges; and nothing outside the root -------------------------------


def test_files_ranges_and_dates(sample: Path, server: MirrorServer) -> None:
    path = tree.HANDBOOK
    data = (sample / path).read_bytes()
    url = server.url + "projects/aurora/1.1/Aurora%20Handbook%20%281.1%29.pdf"
    with httpx.Client(trust_env=False) as client:
        full = client.get(url)
        assert full.status_code == 200 and full.content == data
        assert full.headers["content-length"] == str(len(data))
        assert full.headers["accept-ranges"] == "bytes"
        assert full.headers["last-modified"] == "Tue, 18 Jun 2024 14:05:00 GMT"
        head = client.head(url)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(data))
        part = client.get(url, headers={"Range": "bytes=100-199"})
        assert part.status_code == 206 and part.content == data[100:200]
        assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
        tail = client.get(url, headers={"Range": "bytes=-10"})
        assert tail.status_code == 206 and tail.content == data[-10:]
        bad = client.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert bad.status_code == 416 and bad.headers["content-range"] == f"bytes */{len(data)}"
        stale = client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
        assert stale.status_code == 200 and stale.content == data
        not_modified = client.get(url, headers={"If-Modified-Since": full.headers["last-modified"]})
        assert not_modified.status_code == 304
        moved = client.get(server.url + "projects")
        assert moved.status_code == 301 and moved.headers["location"] == "/projects/"


def test_parse_range() -> None:
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=5-", 10) == (5, 9)
    assert parse_range("bytes=5-100", 10) == (5, 9)
    assert parse_range("bytes=-3", 10) == (7, 9)
    assert parse_range("bytes=-30", 10) == (0, 9)
    assert parse_range("bytes=10-", 10) is False
    assert parse_range("bytes=-0", 10) is False
    assert parse_range("bytes=0-1,3-4", 10) is None  # several ranges: the whole file
    assert parse_range("items=0-1", 10) is None
    assert parse_range("bytes=4-2", 10) is None


def test_no_way_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "ok.txt").write_text("ok")
    (tmp_path / "secret.txt").write_text("secret")
    (root / "escape").symlink_to(tmp_path / "secret.txt")
    (root / "escape-dir").symlink_to(tmp_path)
    raw = [
        "/../secret.txt",
        "/sub/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/%2E%2E/%2E%2E/secret.txt",
        "/sub%2f..%2f..%2fsecret.txt",
        "/..%5csecret.txt",
        "/escape",
        "/escape-dir/secret.txt",
        "/escape-dir/",
        "/sub/ok.txt%00",
        "/%ff",
    ]
    with MirrorServer(root, "127.0.0.5") as srv:
        for target in raw:
            # A raw socket: clients would normalise "..", which is what this test must avoid.
            with socket.create_connection(("127.0.0.5", srv.port), timeout=5) as sock:
                sock.sendall(
                    f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                answer = b""
                while chunk := sock.recv(65536):
                    answer += chunk
            status = int(answer.split(b" ", 2)[1])
            assert status in (400, 404), (target, answer[:200])
            assert b"secret" not in answer, target
        assert httpx.get(srv.url + "sub/ok.txt", trust_env=False).text == "ok"


# --- the demo directory ------------------------------------------------------------------------


def test_prepare_rebuilds_its_own_directory_and_refuses_others(tmp_path: Path) -> None:
    target = tmp_path / "demo"
    layout = prepare(target, "project/trace/mirrorhub")
    first = _tree_files(layout.origin)
    (layout.origin / "stray.txt").write_text("left over")
    layout.database.write_text("old database")
    layout = prepare(target, "project/trace/mirrorhub")
    assert _tree_files(layout.origin) == first  # rebuilt cleanly, identical
    assert not layout.database.exists()
    mirrors = {m.name: _tree_files(layout.mirror(m.name)) for m in MIRRORS}
    assert tree.ISO_NEW not in mirrors["berlin"]
    assert mirrors["paris"][tree.DEB] != first[tree.DEB]
    assert mirrors["paris"][tree.DEB][0] != first[tree.DEB][0]  # a different size
    assert all(
        p.startswith("projects/aurora/") or p == "project/trace/mirrorhub"
        for p in mirrors["newyork"]
    )
    assert mirrors["newyork"][tree.ISO_OLD] == first[tree.ISO_OLD]

    other = tmp_path / "not-a-demo"
    other.mkdir()
    (other / "precious.txt").write_text("keep me")
    with pytest.raises(MirrorhubError, match="not created by `mirrorhub demo`"):
        prepare(other, None)
    assert (other / "precious.txt").read_text() == "keep me"


# --- the whole command -------------------------------------------------------------------------


@dataclass
class Demo:
    base: str  # the dispatcher's URL
    data: Path  # the demo's --dir
    printed: str  # its stdout once ready
    proc: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """A running ``mirrorhub demo`` (stopped at the end if a test did not stop it)."""
    tmp = tmp_path_factory.mktemp("demo-run")
    port = free_port()
    out_path, err_path = tmp / "stdout.txt", tmp / "stderr.txt"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mirrorhub", "demo", "--dir", str(tmp / "data"),
             "--port", str(port)],
            stdout=out, stderr=err, cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
    base = f"http://127.0.0.1:{port}/"
    try:
        _wait_ready(proc, base, err_path)
        yield Demo(base, tmp / "data", out_path.read_text(), proc, out_path, err_path)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_ready(proc: subprocess.Popen[bytes], base: str, err_path: Path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the demo exited with {proc.returncode}: {err_path.read_text()}")
        try:
            health = httpx.get(base + "-/health", trust_env=False, timeout=2).json()
            if health["mirrors"] == len(MIRRORS) and health["files"] > 0:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    pytest.fail(f"the demo was not ready within 90 s: {err_path.read_text()}")


def _curl_lines(printed: str) -> list[list[str]]:
    """The printed curl commands as argv lists (a trailing "| sha256sum" left out)."""
    return [
        shlex.split(line.split(" | ")[0])
        for line in printed.splitlines()
        if line.strip().startswith("curl ")
    ]


def _replay(client: httpx.Client, argv: list[str]) -> httpx.Response:
    """Do what ``curl -s[I|L] [-H header] URL`` does, from this machine."""
    assert argv[0] == "curl"
    headers: dict[str, str] = {}
    flags: set[str] = set()
    url = ""
    args = iter(argv[1:])
    for arg in args:
        if arg == "-H":
            name, _, value = next(args).partition(":")
            headers[name.strip()] = value.strip()
        elif arg.startswith("-"):
            flags.update(arg[1:])
        else:
            url = arg
    method = "HEAD" if "I" in flags else "GET"
    return client.request(method, url, headers=headers, follow_redirects="L" in flags)


def _mirror_hosts(printed: str) -> dict[str, str]:
    """name -> base URL, as the banner lists the mirrors."""
    hosts = {}
    for line in printed.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in {m.name for m in MIRRORS} and "://" in parts[1]:
            hosts[parts[0]] = parts[1]
    return hosts


def _check(example: Example, response: httpx.Response, mirrors: dict[str, str]) -> None:
    assert response.status_code == example.status, (example.title, response.text)
    assert response.headers["cache-control"] == "private, no-store" or example.status == 200
    if example.json:
        decision = json.loads(response.text)
        assert decision["chosen"]["mirror"] == example.mirror
        excluded = {(e["mirror"], e["reason"]) for e in decision["excluded"]}
        assert {(m, r.value) for m, r in example.excluded} <= excluded, excluded
        assert decision["client"]["country"] == example.client.country
    elif example.status == 302:
        assert example.mirror is not None
        assert response.headers["x-mirrorhub-mirror"] == example.mirror
        assert response.headers["location"].startswith(mirrors[example.mirror])
        assert "rel=duplicate" in response.headers["link"]
    if example.origin_reason is not None:
        assert response.headers["x-mirrorhub-origin"] == example.origin_reason.value
        assert "x-mirrorhub-mirror" not in response.headers


def test_printed_curl_lines_do_what_the_banner_says(demo: Demo) -> None:
    base, printed = demo.base, demo.printed
    lines = _curl_lines(printed)
    assert len(lines) == len(EXAMPLES) + 2  # the examples, then the download and its check
    mirrors = _mirror_hosts(printed)
    assert set(mirrors) == {m.name for m in MIRRORS}
    assert {urlsplit(u).hostname for u in mirrors.values()} == {m.address for m in MIRRORS}
    with httpx.Client(trust_env=False) as client:
        for example, argv in zip(EXAMPLES, lines, strict=False):
            assert argv[-1] == example.url(base)
            for _ in range(5):  # the same answer every time: the tiers leave no choice
                _check(example, _replay(client, argv), mirrors)


def test_missing_file_never_goes_to_the_mirror_lacking_it(demo: Demo) -> None:
    url = demo.base + tree.ISO_NEW
    with httpx.Client(trust_env=False) as client:
        for address in ("192.0.2.10", "198.51.100.20", "203.0.113.30", "192.0.2.99"):
            for _ in range(10):
                answer = client.head(url, headers={"X-Forwarded-For": address})
                assert answer.status_code == 302
                assert answer.headers["x-mirrorhub-mirror"] != "berlin"
        # With no location at all the choice is by capacity, still never berlin.
        for _ in range(20):
            assert client.head(url).headers["x-mirrorhub-mirror"] != "berlin"


def test_following_the_redirect_gives_the_origin_bytes(demo: Demo) -> None:
    base = demo.base
    download, sums = _curl_lines(demo.printed)[-2:]
    assert download[-1] == DOWNLOAD.url(base)
    origin = (demo.data / "origin" / tree.HANDBOOK).read_bytes()
    with httpx.Client(trust_env=False) as client:
        first = _replay(client, [a.replace("L", "I") if a == "-sL" else a for a in download])
        assert first.status_code == 302 and first.headers["x-mirrorhub-mirror"] == DOWNLOAD.mirror
        digest = base64.b64encode(hashlib.sha256(origin).digest()).decode()
        assert first.headers["digest"] == f"SHA-256={digest}"
        body = _replay(client, download)
        assert body.status_code == 200 and body.content == origin
        assert body.url.host == next(m.address for m in MIRRORS if m.name == DOWNLOAD.mirror)
        listed = _replay(client, sums)
        assert listed.status_code == 200  # small: served by the origin itself
        name = tree.HANDBOOK.rsplit("/", 1)[1]
        assert f"{hashlib.sha256(origin).hexdigest()} *{name}" in listed.text.splitlines()
        # Each mirror serves the exact origin bytes of the ISO every mirror holds.
        iso = (demo.data / "origin" / tree.ISO_OLD).read_bytes()
        hosts = set()
        for address in ("192.0.2.10", "198.51.100.20", "203.0.113.30"):
            got = client.get(
                base + tree.ISO_OLD, headers={"X-Forwarded-For": address}, follow_redirects=True
            )
            assert got.status_code == 200 and got.content == iso
            hosts.add(got.url.host)
        assert hosts == {m.address for m in MIRRORS}


def test_ctrl_c_stops_everything_cleanly(demo: Demo) -> None:
    """Last in this module: SIGINT stops the dispatcher and the mirrors within seconds."""
    mirrors = _mirror_hosts(demo.printed)
    demo.proc.send_signal(signal.SIGINT)
    try:
        code = demo.proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pytest.fail("the demo did not stop within 5 s of SIGINT")
    errors = demo.stderr.read_text()
    assert code == 0, errors
    assert "Traceback" not in errors
    assert demo.stdout.read_text().rstrip().endswith("mirrorhub demo: stopped")
    for url in mirrors.values():
        with pytest.raises(httpx.ConnectError):
            httpx.get(url, trust_env=False, timeout=2)


def test_a_busy_port_is_refused_before_anything_is_built(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from mirrorhub.cli import main

    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        code = main(["demo", "--dir", str(tmp_path / "data"), "--port", str(port)])
    assert code == 1
    assert "choose another --port" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()
