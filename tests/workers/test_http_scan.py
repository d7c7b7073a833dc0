"""The HTTP listing crawler against real servers on loopback (nginx, a scripted server)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrorhub.errors import ListingError, ScanFailed
from mirrorhub.workers.http_scan import CrawlLimits, crawl, scope_roots, within
from tests.servers import (
    Reply,
    endless_route,
    listing_server,
    make_tree,
    nginx_autoindex,
    static_route,
    utc,
)

T = utc("2024-01-02 03:04:05")
T_MIN = utc("2024-01-02 03:04:00")  # listings show minutes
FILES = {
    "pub/a.iso": (100, T),
    "pub/iso/b.iso": (2048, T),
    "pub/with space/ü.txt": (b"hello", T),
    "other/c.txt": (3, T),
}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree", FILES)


def summary(result: object) -> set[tuple[str, int, int, int | None]]:
    files = result.files  # type: ignore[attr-defined]
    return {(f.path, f.size_min, f.size_max, f.mtime) for f in files}


# --- pure helpers ----------------------------------------------------------------------------


def test_scope_roots() -> None:
    assert scope_roots(()) == [""]
    assert scope_roots(("pub/iso/", "pub/", "/other")) == ["other/", "pub/"]


def test_within() -> None:
    base = "http://m.example/pub/"
    assert within(base, "http://m.example/pub/iso/")
    assert within(base, "http://M.example:80/pub/x/")
    assert not within(base, "http://m.example/private/")
    assert not within(base, "https://m.example/pub/")
    assert not within(base, "http://evil.example/pub/")
    assert not within(base, "http://m.example:8080/pub/")
    assert not within(base, "http://m.example/pub/?C=N;O=D")


# --- nginx -------------------------------------------------------------------------------------


async def test_nginx_full_tree_and_scope(tree: Path, tmp_path: Path) -> None:
    with nginx_autoindex(tree, "127.0.0.2", workdir=tmp_path / "ngx") as url:
        result = await crawl(url, allow_private=True)
        assert summary(result) == {
            ("pub/a.iso", 100, 100, T_MIN),
            ("pub/iso/b.iso", 2048, 2048, T_MIN),
            ("pub/with space/ü.txt", 5, 5, T_MIN),
            ("other/c.txt", 3, 3, T_MIN),
        }
        assert result.mtime_precision == 60
        assert result.pages == 5
        scoped = await crawl(url, allow_private=True, scope=("pub/iso/", "nothere/"))
        assert summary(scoped) == {("pub/iso/b.iso", 2048, 2048, T_MIN)}


async def test_nginx_local_time_listing_is_shifted(tree: Path, tmp_path: Path) -> None:
    with nginx_autoindex(tree, "127.0.0.3", workdir=tmp_path / "ngx", tz="Etc/GMT-1") as url:
        result = await crawl(url + "pub/iso/", allow_private=True)
    assert summary(result) == {("b.iso", 2048, 2048, T_MIN + 3600)}


async def test_refuses_loopback_unless_allowed(tree: Path, tmp_path: Path) -> None:
    with (
        nginx_autoindex(tree, "127.0.0.2", workdir=tmp_path / "ngx") as url,
        pytest.raises(ScanFailed, match=r"address refused: 127\.0\.0\.2 is a loopback"),
    ):
        await crawl(url, allow_private=False)


async def test_redirects(tree: Path, tmp_path: Path) -> None:
    extra = (
        "location = /pub/old/ { return 301 /pub/iso/; }\n"
        "location = /away/ { return 302 http://127.0.0.9:1/pub/; }\n"
        "location = /above/ { return 302 /; }\n"
    )
    with nginx_autoindex(tree, "127.0.0.2", workdir=tmp_path / "ngx", extra=extra) as url:
        moved = await crawl(url, allow_private=True, scope=("pub/old/",))
        assert summary(moved) == {("pub/old/b.iso", 2048, 2048, T_MIN)}  # within the base
        with pytest.raises(ScanFailed, match="redirect off the mirror"):
            await crawl(url + "away/", allow_private=True)
        with pytest.raises(ScanFailed, match="redirect off the mirror"):
            await crawl(url + "above/", allow_private=True)


# --- broken listings ------------------------------------------------------------------------


def _garbage() -> Reply:
    return Reply(200, b"<html><body><p>Welcome to our mirror!</p></body></html>")


@pytest.fixture
def broken_server(tree: Path) -> Iterator[str]:
    cut = (tree / "pub").exists()  # a real page, cut in the middle of a row
    assert cut
    truncated = (
        b"<html><head><title>Index of /cut/</title></head><body><h1>Index of /cut/</h1><hr><pre>"
        b'<a href="../">../</a>\n<a href="x.iso">x.iso</a>   02-Jan-2024 03:04   100\n'
        b'<a href="y.iso">y.iso</a>   02-Jan-20'
    )

    def huge() -> Iterator[bytes]:
        yield b"<html><head><title>Index of /huge/</title></head><body><pre>"
        for _ in range(10_000):
            yield b"<!-- padding -->" * 64

    routes = [
        static_route("/garbage/", _garbage()),
        static_route("/cut/", Reply(200, truncated)),
        static_route("/huge/", Reply(200, huge())),
        static_route("/forbidden/", Reply(403, b"no")),
        endless_route("/endless/"),
    ]
    with listing_server("127.0.0.5", root=tree, routes=routes) as url:
        yield url


async def test_garbage_page_fails(broken_server: str) -> None:
    with pytest.raises(ListingError, match="not a directory listing"):
        await crawl(broken_server + "garbage/", allow_private=True)


async def test_truncated_page_fails(broken_server: str) -> None:
    with pytest.raises(ListingError, match="truncated listing"):
        await crawl(broken_server + "cut/", allow_private=True)


async def test_page_too_large_fails(broken_server: str) -> None:
    limits = CrawlLimits(max_page_bytes=1024 * 1024)
    with pytest.raises(ListingError, match="larger than 1048576 bytes"):
        await crawl(broken_server + "huge/", allow_private=True, limits=limits)


async def test_http_error_fails(broken_server: str) -> None:
    with pytest.raises(ScanFailed, match="HTTP 403"):
        await crawl(broken_server + "forbidden/", allow_private=True)
    with pytest.raises(ScanFailed, match="HTTP 404"):
        await crawl(broken_server + "nothing/", allow_private=True)


@pytest.mark.parametrize(
    ("limits", "reason"),
    [
        (CrawlLimits(), "deeper than 64 directories"),
        (CrawlLimits(max_pages=20), "more than 20 listing pages"),
        (CrawlLimits(max_entries=30), "more than 30 entries"),
        (CrawlLimits(max_depth=10_000, total_timeout=0.5), "timeout: the scan took more"),
    ],
)
async def test_endless_listing_fails(broken_server: str, limits: CrawlLimits, reason: str) -> None:
    with pytest.raises(ScanFailed, match=reason):
        await crawl(broken_server + "endless/", allow_private=True, limits=limits)


async def test_apache_listing_with_shift(tree: Path) -> None:
    with listing_server("127.0.0.6", root=tree, shift=-7200, exact=False) as url:
        result = await crawl(url, allow_private=True, scope=("pub/",))
    got = {f.path: (f.size_min <= size <= f.size_max, f.mtime) for f, size in zip(
        sorted(result.files, key=lambda f: f.path), (100, 2048, 5), strict=True
    )}  # fmt: skip
    assert got == {
        "pub/a.iso": (True, T_MIN - 7200),
        "pub/iso/b.iso": (True, T_MIN - 7200),
        "pub/with space/ü.txt": (True, T_MIN - 7200),
    }


# --- network failures -------------------------------------------------------------------------


async def test_connection_refused() -> None:
    with pytest.raises(ScanFailed, match="connection refused"):
        await crawl("http://127.0.0.7:9/", allow_private=True)


async def test_request_timeout() -> None:
    """A server that accepts and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.8", 0))
    listener.listen()
    port = listener.getsockname()[1]
    stop = threading.Event()
    try:
        limits = CrawlLimits(request_timeout=0.3)
        with pytest.raises(ScanFailed, match="timeout"):
            await crawl(f"http://127.0.0.8:{port}/", allow_private=True, limits=limits)
    finally:
        stop.set()
        listener.close()
