"""rsync listings from a real ``rsync --daemon`` on loopback, and the error classification."""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mirrorhub.errors import ScanFailed
from mirrorhub.workers.rsync_scan import (
    RsyncTarget,
    classify,
    list_rsync,
    parse_rsync_url,
    rsync_url_for,
    run_list,
)
from tests.servers import make_tree, rsync_daemon, utc

T = utc("2024-01-02 03:04:05")
FILES = {
    "pub/a.iso": (100, T),
    "pub/iso/b.iso": (2048, T + 1),
    "pub/with space/ü.txt": (b"hello", T + 2),
    "other/c.txt": (3, T + 3),
}


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[str]:
    tree = make_tree(tmp_path / "tree", FILES)
    with rsync_daemon(
        {"mirror": tree, "pubonly": tree / "pub"}, "127.0.0.3", workdir=tmp_path / "rs"
    ) as url:
        yield url


def files(result: object) -> set[tuple[str, int, int | None]]:
    return {(f.path, f.size_min, f.mtime) for f in result.files}  # type: ignore[attr-defined]


# --- pure --------------------------------------------------------------------------------------


def test_parse_rsync_url() -> None:
    assert parse_rsync_url("rsync://m.example/mod/sub") == RsyncTarget("m.example", 873, "mod/sub/")
    assert parse_rsync_url("rsync://[::1]:8873/mod/") == RsyncTarget("::1", 8873, "mod/")
    for bad in ("http://m.example/mod/", "rsync://m.example/", "rsync://m.example:x/mod/"):
        with pytest.raises(ScanFailed):
            parse_rsync_url(bad)
    assert (
        rsync_url_for(ipaddress.ip_address("::1"), 873, "mod/a b/")
        == "rsync://[::1]:873/mod/a%20b/"
    )


@pytest.mark.parametrize(
    ("code", "stderr", "kind"),
    [
        (5, "@ERROR: Unknown module 'nope'\nrsync error: error starting client-server", "unknown module"),
        (10, "rsync: [Receiver] failed to connect to 1.2.3.4 (1.2.3.4): Connection refused (111)", "connection refused"),
        (35, "rsync: did not see server greeting", "timeout"),
        (30, "rsync error: timeout in data send/receive (code 30)", "timeout"),
        (5, "@ERROR: auth failed on module x", "module needs a password"),
        (5, "@ERROR: max connections (10) reached -- try again later", "too many connections"),
        (23, 'rsync: [sender] change_dir "zzz" (in pub) failed: No such file or directory (2)', "directory not found"),
        (23, 'rsync: [sender] opendir "x" (in pub) failed: Permission denied (13)', "listing truncated"),
        (12, "rsync: connection unexpectedly closed", "listing truncated"),
        (99, "", "rsync exit code 99"),
    ],
)  # fmt: skip
def test_classify(code: int, stderr: str, kind: str) -> None:
    assert classify(code, stderr).startswith(kind + ": ")


# --- real daemon ---------------------------------------------------------------------------------


async def test_lists_module_relative_to_base(daemon: str) -> None:
    result = await list_rsync(daemon + "mirror/", allow_private=True)
    assert files(result) == {
        ("pub/a.iso", 100, T),
        ("pub/iso/b.iso", 2048, T + 1),
        ("pub/with space/ü.txt", 5, T + 2),
        ("other/c.txt", 3, T + 3),
    }
    assert all(f.size_min == f.size_max and f.mtime_precision == 1 for f in result.files)
    sub = await list_rsync(daemon + "mirror/pub/iso", allow_private=True)
    assert files(sub) == {("b.iso", 2048, T + 1)}


async def test_scope_lists_only_its_subtrees(daemon: str) -> None:
    result = await list_rsync(
        daemon + "mirror/", scope=("pub/iso/", "other/", "gone/"), allow_private=True
    )
    assert files(result) == {("pub/iso/b.iso", 2048, T + 1), ("other/c.txt", 3, T + 3)}


async def test_streams_lines(daemon: str) -> None:
    lines: list[str] = []
    await run_list(daemon + "pubonly/", lines.append, io_timeout=5, deadline=time.monotonic() + 10)
    assert any(line.endswith(" a.iso") for line in lines)


async def test_unknown_module(daemon: str) -> None:
    with pytest.raises(ScanFailed, match=r"^unknown module: @ERROR: Unknown module 'nope'"):
        await list_rsync(daemon + "nope/", allow_private=True)


async def test_missing_directory(daemon: str) -> None:
    with pytest.raises(ScanFailed, match=r"^directory not found"):
        await list_rsync(daemon + "mirror/zzz/", allow_private=True)


async def test_connection_refused() -> None:
    with pytest.raises(ScanFailed, match=r"^connection refused"):
        await list_rsync("rsync://127.0.0.7:9/mod/", allow_private=True)


async def test_ssrf_guard_refuses_loopback(daemon: str) -> None:
    with pytest.raises(ScanFailed, match=r"address refused: 127\.0\.0\.3 is a loopback"):
        await list_rsync(daemon + "mirror/", allow_private=False)
    with pytest.raises(ScanFailed, match=r"address refused: 127\.0\.0\.1 is a loopback"):
        await list_rsync("rsync://localhost/mod/", allow_private=False)


async def test_time_budget_kills_a_silent_server() -> None:
    """A server that accepts and never speaks: the scan's budget ends it."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.8", 0))
        listener.listen()
        port = listener.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(ScanFailed, match=r"^timeout"):
            await list_rsync(
                f"rsync://127.0.0.8:{port}/mod/",
                allow_private=True,
                io_timeout=30,
                total_timeout=0.5,
            )
        assert time.monotonic() - t0 < 5
