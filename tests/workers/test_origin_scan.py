"""The origin scan on real temporary trees, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import MirrorFileDiffRow, MirrorRow, OriginFileRow
from mirrorhub.errors import ScanFailed
from mirrorhub.workers import origin_scan
from mirrorhub.workers.origin_scan import (
    OriginScanResult,
    ScanProgress,
    diff_origin,
    hash_file,
    scan_origin,
)
from mirrorhub.workers.origin_walk import Skipped, WalkedFile, unservable_reason, walk_origin

Sessions = async_sessionmaker[AsyncSession]
T0 = 1_700_000_000


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write(root: Path, rel: str, data: bytes, mtime: int = T0) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.utime(path, (mtime, mtime))
    return path


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def origin(tmp_path: Path) -> Path:
    root = tmp_path / "origin"
    write(root, "pub/iso/x.iso", b"x" * 3_000_000)  # several 1 MiB reads
    write(root, "pub/empty", b"")
    write(root, "pub/with space/ünïcødé €.txt", b"hello")
    write(root, "README", b"readme")
    return root


async def table(sessions: Sessions) -> dict[str, tuple[int, int, str | None, float]]:
    t = OriginFileRow
    async with sessions() as s:
        rows = await s.execute(select(t.path, t.size, t.mtime, t.sha256, t.changed_at))
        return {r[0]: (r[1], r[2], r[3], r[4]) for r in rows}


async def version(sessions: Sessions) -> int:
    async with sessions() as s:
        return int((await s.execute(text("SELECT version FROM index_version"))).scalar_one())


async def test_first_scan_records_everything(origin: Path, sessions: Sessions) -> None:
    seen: list[ScanProgress] = []
    result = await scan_origin(
        sessions, origin, clock=Clock(100.0), progress=seen.append, batch_size=2
    )
    assert (result.seen, result.new, result.changed, result.unchanged, result.deleted) == (
        4, 4, 0, 0, 0,
    )  # fmt: skip
    assert result.bytes_hashed == 3_000_000 + 5 + 6
    assert result.changed_paths == (
        "README",
        "pub/empty",
        "pub/iso/x.iso",
        "pub/with space/ünïcødé €.txt",
    )
    assert await table(sessions) == {
        "README": (6, T0, sha(b"readme"), 100.0),
        "pub/empty": (0, T0, sha(b""), 100.0),
        "pub/iso/x.iso": (3_000_000, T0, sha(b"x" * 3_000_000), 100.0),
        "pub/with space/ünïcødé €.txt": (5, T0, sha(b"hello"), 100.0),
    }
    assert await version(sessions) > 0
    assert seen[-1] == ScanProgress("done", 4, 4, 4, result.bytes_hashed, result.bytes_hashed)


async def test_rescan_without_change_hashes_nothing(origin: Path, sessions: Sessions) -> None:
    clock = Clock(100.0)
    await scan_origin(sessions, origin, clock=clock)
    before, v = await table(sessions), await version(sessions)
    clock.now = 200.0
    result = await scan_origin(sessions, origin, clock=clock)
    assert result.bytes_hashed == 0
    assert (result.seen, result.new, result.changed, result.unchanged) == (4, 0, 0, 4)
    assert not result.any_change and result.changed_paths == ()
    assert await table(sessions) == before
    assert await version(sessions) == v


async def test_touch_or_resize_rehashes_only_that_file(origin: Path, sessions: Sessions) -> None:
    clock = Clock(100.0)
    await scan_origin(sessions, origin, clock=clock)
    os.utime(origin / "README", (T0 + 60, T0 + 60))  # same content, new mtime
    write(origin, "pub/empty", b"now 9 by", mtime=T0)  # new size, same mtime
    v = await version(sessions)
    clock.now = 200.0
    result = await scan_origin(sessions, origin, clock=clock)
    assert (result.new, result.changed, result.unchanged, result.deleted) == (0, 2, 2, 0)
    assert result.bytes_hashed == 6 + 8
    assert result.changed_paths == ("README", "pub/empty")
    rows = await table(sessions)
    assert rows["README"] == (6, T0 + 60, sha(b"readme"), 200.0)
    assert rows["pub/empty"] == (8, T0, sha(b"now 9 by"), 200.0)
    assert rows["pub/iso/x.iso"][3] == 100.0
    assert await version(sessions) > v


async def test_deleted_files_disappear_with_their_mirror_diffs(
    origin: Path, sessions: Sessions
) -> None:
    await scan_origin(sessions, origin, clock=Clock())
    now = datetime(2024, 1, 1, tzinfo=UTC)
    async with sessions() as s, s.begin():
        mirror = MirrorRow(name="m1", http_url="http://127.0.0.2/", created_at=now, updated_at=now)
        s.add(mirror)
        await s.flush()
        ids = {p: i for p, i in await s.execute(select(OriginFileRow.path, OriginFileRow.id))}
        for path in ("README", "pub/empty"):
            s.add(MirrorFileDiffRow(mirror_id=mirror.id, file_id=ids[path], kind="missing"))
    (origin / "README").unlink()
    result = await scan_origin(sessions, origin, clock=Clock())
    assert (result.deleted, result.unchanged, result.bytes_hashed) == (1, 3, 0)
    assert "README" not in await table(sessions)
    async with sessions() as s:
        diffs = (await s.execute(select(MirrorFileDiffRow.file_id))).scalars().all()
    assert diffs == [ids["pub/empty"]]


async def test_symlinks_and_loops(origin: Path, tmp_path: Path, sessions: Sessions) -> None:
    write(tmp_path, "outside/secret", b"secret")
    (origin / "leak").symlink_to(tmp_path / "outside" / "secret")
    (origin / "leakdir").symlink_to(tmp_path / "outside")
    (origin / "pub" / "latest.iso").symlink_to("iso/x.iso")
    (origin / "pub" / "loop").symlink_to(".")  # a directory loop: never followed
    (origin / "a").symlink_to("b")
    (origin / "b").symlink_to("a")  # a link loop: does not resolve
    (origin / "dangling").symlink_to("nowhere")
    result = await asyncio.wait_for(scan_origin(sessions, origin, clock=Clock()), timeout=30)
    rows = await table(sessions)
    assert set(rows) == {
        "README",
        "pub/empty",
        "pub/iso/x.iso",
        "pub/latest.iso",
        "pub/with space/ünïcødé €.txt",
    }
    assert rows["pub/latest.iso"][:3] == rows["pub/iso/x.iso"][:3]
    assert result.skipped == 6


async def test_empty_origin_is_refused_unless_allowed(
    origin: Path, tmp_path: Path, sessions: Sessions
) -> None:
    await scan_origin(sessions, origin, clock=Clock())
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ScanFailed, match="refusing to unpublish 4"):
        await scan_origin(sessions, empty, clock=Clock())
    assert len(await table(sessions)) == 4
    result = await scan_origin(sessions, empty, clock=Clock(), allow_empty=True)
    assert result.deleted == 4 and await table(sessions) == {}


async def test_missing_origin_dir_names_the_setting(tmp_path: Path, sessions: Sessions) -> None:
    with pytest.raises(ScanFailed, match="MIRRORHUB_ORIGIN_DIR"):
        await scan_origin(sessions, tmp_path / "nope", clock=Clock())


async def test_changed_paths_are_bounded(
    origin: Path, sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(origin_scan, "MAX_CHANGED_PATHS", 3)
    result = await scan_origin(sessions, origin, clock=Clock())
    assert result.new == 4
    assert result.changed_overflow and result.changed_paths == ()


# --- the walk and the diff, without a database ------------------------------------------


def walked(root: Path) -> tuple[dict[str, WalkedFile], dict[str, Skipped]]:
    files: dict[str, WalkedFile] = {}
    skipped: dict[str, Skipped] = {}
    for item in walk_origin(str(root)):
        if isinstance(item, Skipped):
            skipped[item.path] = item
        else:
            files[item.path] = item
    return files, skipped


def test_walk_skips_rsync_temp_files_and_unservable_names(tmp_path: Path) -> None:
    long_path = "pub/" + "/".join(c * 250 for c in "abcde")  # over 1024 bytes, each name legal
    write(tmp_path, "pub/.x.iso.Ab3dE9", b"partial")  # rsync receiving x.iso
    write(tmp_path, "pub/.~tmp~/x.iso", b"delayed")  # rsync --delay-updates
    write(tmp_path, "pub/.treeinfo", b"kept")
    write(tmp_path, "pub/back\\slash", b"")
    write(tmp_path, "pub/new\nline", b"")
    write(tmp_path, "-/reserved", b"")
    write(tmp_path, long_path, b"")
    os.mkfifo(tmp_path / "pub" / "fifo")
    bad = os.fsencode(tmp_path / "pub") + b"/latin1-\xe9"
    Path(os.fsdecode(bad)).write_bytes(b"")
    files, skipped = walked(tmp_path)
    assert set(files) == {"pub/.treeinfo"}
    assert set(skipped) == {
        "pub/.x.iso.Ab3dE9",
        "pub/.~tmp~",
        "pub/back\\slash",
        "pub/new\nline",
        "-/",
        long_path,
        "pub/fifo",
        "pub/latin1-\udce9",
    }
    assert not any(s.keep for s in skipped.values())
    assert unservable_reason("-") == "reserved prefix -/"
    assert unservable_reason("pub/x.iso") is None


def test_walk_mtime_is_floored_whole_seconds(tmp_path: Path) -> None:
    path = write(tmp_path, "f", b"1")
    os.utime(path, ns=(T0 * 10**9 + 999_999_999, T0 * 10**9 + 999_999_999))
    files, _ = walked(tmp_path)
    assert files["f"] == WalkedFile("f", 1, T0)


def test_diff_classifies_and_keeps_what_it_could_not_read() -> None:
    db = {
        "same": (1, 10, T0),
        "bigger": (2, 10, T0),
        "touched": (3, 10, T0),
        "gone": (4, 10, T0),
        "locked/inside": (5, 10, T0),
        "unstattable": (6, 10, T0),
        "locked2": (7, 10, T0),  # shares a prefix with "locked/" but is not under it
    }
    items: list[WalkedFile | Skipped] = [
        WalkedFile("same", 10, T0),
        WalkedFile("bigger", 11, T0),
        WalkedFile("touched", 10, T0 + 1),
        WalkedFile("fresh", 5, T0),
        Skipped("locked/", "cannot list directory", keep=True),
        Skipped("unstattable", "cannot stat", keep=True),
        Skipped(".x.iso.abcdef", "rsync temporary file"),
    ]
    diff = diff_origin(db, iter(items))
    assert diff.new == [WalkedFile("fresh", 5, T0)]
    assert diff.changed == [
        (2, WalkedFile("bigger", 11, T0)),
        (3, WalkedFile("touched", 10, T0 + 1)),
    ]
    assert (diff.unchanged, diff.seen, diff.skipped) == (1, 4, 3)
    assert sorted(diff.deleted) == [4, 7]


def test_hash_file_refuses_a_fifo_without_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="not a regular file"):
        hash_file(str(tmp_path / "fifo"))


def test_hash_outcome_for_a_vanished_file(tmp_path: Path) -> None:
    job = origin_scan.HashJob(WalkedFile("gone", 1, T0), None)
    [outcome] = origin_scan._hash_task(str(tmp_path), [job])
    assert outcome.result is None and "vanished" in outcome.reason


def test_a_file_changing_while_hashed_is_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "f", b"v1")
    real_stat = os.stat
    rewrites: list[int] = []

    def stat_after_a_rewrite(p: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        if p == str(path) and not rewrites:  # the first read is overtaken by a writer
            rewrites.append(1)
            write(tmp_path, "f", b"v2 longer", mtime=T0 + 5)
        return real_stat(p, *args, **kwargs)

    monkeypatch.setattr(os, "stat", stat_after_a_rewrite)
    job = origin_scan.HashJob(WalkedFile("f", 2, T0), None)
    [outcome] = origin_scan._hash_task(str(tmp_path), [job])
    assert outcome.result == origin_scan.FileHash(9, T0 + 5, sha(b"v2 longer"))
    assert rewrites == [1]


def test_result_is_frozen() -> None:
    result = OriginScanResult(1, 1, 0, 0, 0, 0, 1, 0.1)
    with pytest.raises(AttributeError):
        result.new = 2  # type: ignore[misc]
