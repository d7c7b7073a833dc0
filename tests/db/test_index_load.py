"""Dispatchers follow the database by applying the change log in place, on both databases:
after every kind of change the live index answers exactly as a full build would."""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import sqlite3
import sys
from array import array
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import services
from mirrorhub.db import diff_reader, index_load
from mirrorhub.db.changelog import pack_ids
from mirrorhub.db.diff_reader import HEADER, MAGIC
from mirrorhub.db.index_load import PROCESS_MIN_FILES, DatabaseLoader
from mirrorhub.db.models import (
    IndexChangeRow,
    MirrorFileConfirmationRow,
    MirrorFileDiffRow,
    MirrorRow,
    MirrorStateRow,
    OriginFileRow,
)
from mirrorhub.db.repositories import bump_version
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.index import Index, IndexConfig, IndexHolder, empty_index, refresh_once
from mirrorhub.selection import Band
from mirrorhub.workers import recheck
from mirrorhub.workers.origin_scan import scan_origin
from mirrorhub.workers.reconcile import DiffKind
from mirrorhub.workers.scan_apply import DiffRow, ScanRecord, apply_scan
from tests.conftest import _migrate
from tests.index.test_delta import assert_same_answers
from tests.servers import make_tree

Sessions = async_sessionmaker[AsyncSession]
CONFIG = IndexConfig(Band(1.5, 500.0), 2, 1_000, ("*.asc",), (("pub/", 60.0),))
TREE = {
    "pub/1.0/a.iso": (4000, 1_000),
    "pub/1.0/a.iso.asc": (10, 1_000),
    "pub/1.0/b.tar.gz": (3000, 1_000),
    "pub/2.0/a.iso": (5000, 1_000),
    "other/x.bin": (2000, 1_000),
}


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def file_ids(sessions: Sessions) -> dict[str, int]:
    async with sessions() as s:
        rows = await s.execute(select(OriginFileRow.path, OriginFileRow.id))
        return {path: fid for path, fid in rows}


async def mirror(sessions: Sessions, name: str, country: str, lat: str, lon: str) -> int:
    record = await services.add_mirror(
        sessions,
        {"name": name, "http_url": f"http://{name}.example/", "country": country,
         "latitude": lat, "longitude": lon},
    )  # fmt: skip
    return record.mirror.id


async def scan(sessions: Sessions, mirror_id: int, at: float, lacking: dict[int, str]) -> None:
    rows = [DiffRow(fid, DiffKind(kind)) for fid, kind in lacking.items()]
    await apply_scan(sessions, ScanRecord(mirror_id, "http", at, 1.0, True), rows)


async def scanned_origin(sessions: Sessions, tmp_path: Path) -> tuple[Clock, Path]:
    clock = Clock()
    origin = make_tree(tmp_path / "origin", TREE)
    await scan_origin(sessions, origin, clock=clock)
    return clock, origin


async def test_every_change_is_applied_in_place(sessions: Sessions, tmp_path: Path) -> None:
    clock, origin = await scanned_origin(sessions, tmp_path)
    ids = await file_ids(sessions)
    de = await mirror(sessions, "de", "DE", "52.5", "13.4")
    us = await mirror(sessions, "us", "US", "40.7", "-74.0")
    await scan(sessions, de, clock.now + 10, {ids["pub/1.0/b.tar.gz"]: "missing"})
    await scan(sessions, us, clock.now + 10, {})

    holder = IndexHolder(empty_index(CONFIG))
    loader = DatabaseLoader(sessions)
    assert await refresh_once(holder, loader, CONFIG, clock)
    index = holder.current
    assert holder.counts.full_builds == 1 and len(index) == len(TREE)

    async def origin_changes() -> None:
        clock.now += 100
        (origin / "pub/1.0/b.tar.gz").write_bytes(b"y" * 3500)
        (origin / "other/x.bin").unlink()
        make_tree(origin, {"pub/3.0/c.iso": (6000, 2_000)})
        await scan_origin(sessions, origin, clock=clock)

    async def new_differences() -> None:
        now = await file_ids(sessions)
        await scan(sessions, de, clock.now + 5, {now["pub/2.0/a.iso"]: "size"})
        await scan(sessions, us, clock.now + 5, {now["pub/3.0/c.iso"]: "missing"})

    async def a_recheck() -> None:
        now = await file_ids(sessions)
        await recheck._store(
            sessions, [{"mirror_id": us, "file_id": now["pub/3.0/c.iso"], "checked_at": clock.now}]
        )

    async def mirror_only() -> None:
        await services.set_enabled(sessions, "us", False)
        await services.set_enabled(sessions, "us", True)

    async def new_mirror() -> None:
        jp = await mirror(sessions, "jp", "JP", "35.7", "139.7")
        now = await file_ids(sessions)
        await scan(sessions, jp, clock.now + 20, {now["pub/1.0/a.iso"]: "missing"})

    steps: list[Callable[[], Awaitable[None]]] = [
        origin_changes, new_differences, a_recheck, mirror_only, new_mirror,
    ]  # fmt: skip
    paths = set(TREE) | {"pub/3.0/c.iso"}
    for number, step in enumerate(steps, start=1):
        await step()
        assert await refresh_once(holder, loader, CONFIG, clock)
        assert holder.current is index, step.__name__
        assert (holder.counts.full_builds, holder.counts.deltas) == (1, number)
        fresh = await DatabaseLoader(sessions).build(CONFIG, clock)
        assert index.version == fresh.version
        assert_same_answers(index, fresh, paths, seed=number)
    assert index.lookup("other/x.bin") is None and index.lookup("pub/3.0/c.iso") is not None

    # A removed mirror cannot be taken in place: a new index is built.
    await services.remove_mirror(sessions, "de")
    assert await refresh_once(holder, loader, CONFIG, clock)
    assert holder.current is not index and holder.counts.full_builds == 2
    assert [s.mirror.name for s in holder.current.slots] == ["us", "jp"]


async def test_a_gap_in_the_change_log_means_a_full_build(
    sessions: Sessions, tmp_path: Path
) -> None:
    clock, origin = await scanned_origin(sessions, tmp_path)
    holder = IndexHolder(empty_index(CONFIG))
    loader = DatabaseLoader(sessions)
    await refresh_once(holder, loader, CONFIG, clock)
    first = holder.current
    clock.now += 100
    make_tree(origin, {"pub/4.0/d.iso": (7000, 3_000)})
    await scan_origin(sessions, origin, clock=clock)
    async with sessions() as s, s.begin():  # the entries were pruned
        await s.execute(delete(IndexChangeRow))
    assert await refresh_once(holder, loader, CONFIG, clock)
    assert holder.current is not first
    assert (holder.counts.full_builds, holder.counts.deltas) == (2, 0)
    assert holder.current.lookup("pub/4.0/d.iso") is not None


async def test_the_change_log_names_what_each_writer_changed(
    sessions: Sessions, tmp_path: Path
) -> None:
    from mirrorhub.db import changelog

    clock, _ = await scanned_origin(sessions, tmp_path)
    ids = await file_ids(sessions)
    async with sessions() as s:
        # The origin scan's one batch: version 1 writes the files (pending), 2 stamps them.
        assert await changelog.changed_files(s, 0, 1) == frozenset(ids.values())
        assert await changelog.changed_files(s, 1, 2) == frozenset(ids.values())
    de = await mirror(sessions, "de", "DE", "52.5", "13.4")  # version 3: mirrors only
    await scan(
        sessions, de, clock.now, {ids["pub/1.0/a.iso"]: "missing", ids["other/x.bin"]: "size"}
    )
    await scan(sessions, de, clock.now + 1, {ids["pub/1.0/a.iso"]: "missing"})
    async with sessions() as s:
        assert await changelog.changed_files(s, 2, 3) == frozenset()
        both = frozenset({ids["pub/1.0/a.iso"], ids["other/x.bin"]})
        assert await changelog.changed_files(s, 3, 4) == both
        # only what changed: a.iso is missing there as before
        assert await changelog.changed_files(s, 4, 5) == frozenset({ids["other/x.bin"]})
        assert await changelog.changed_files(s, 0, 6) is None  # no entry for version 6


def test_packed_ids_round_trip() -> None:
    from mirrorhub.db.changelog import pack_ids, unpack_ids

    ids = {1, 2, 3, 2**40, 999_999}
    assert list(unpack_ids(pack_ids(ids))) == sorted(ids)
    assert list(unpack_ids(pack_ids([]))) == []
    assert len(pack_ids(range(1, 100_001))) < 8_000  # neighbouring ids compress well (800 KB raw)


# --- full builds: differences read by a child process (SQLite) or in-process ---


async def populate(sessions: Sessions, files: int, mirror_ids: list[int], seed: int = 7) -> None:
    """A synthetic install written straight into the tables: files with gaps in their ids,
    checksums or none, origin-only names, differences of every kind, some re-checks."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    ids = [1 + 3 * i + rng.randrange(3) for i in range(files)]
    async with sessions() as s, s.begin():
        await s.execute(
            insert(MirrorRow),
            [
                {"id": m, "name": f"m{m}", "http_url": f"http://m{m}.example/",
                 "country": rng.choice(["DE", "US", "JP"]), "latitude": rng.uniform(-60, 60),
                 "longitude": rng.uniform(-180, 180), "created_at": now, "updated_at": now}
                for m in mirror_ids
            ],
        )  # fmt: skip
        await s.execute(
            insert(MirrorStateRow),
            [{"mirror_id": m, "health": "up", "last_good_scan": 2e6} for m in mirror_ids],
        )
        await s.execute(
            insert(OriginFileRow),
            [
                {"id": f, "path": f"pub/{f % 7}/{f % 5}/f{f}" + rng.choice([".iso", ".asc"]),
                 "size": rng.choice([10, 5000, 80000]), "mtime": 1_000 + f,
                 "sha256": rng.choice([None, f"{f:064x}"]), "changed_at": 1e6 + f}
                for f in ids
            ],
        )  # fmt: skip
        diffs = [
            {"mirror_id": m, "file_id": f, "kind": rng.choice(["missing", "size", "mtime"])}
            for f in ids
            if rng.random() < 0.7
            for m in rng.sample(mirror_ids, rng.randint(1, min(6, len(mirror_ids))))
        ]
        diffs += [  # one set shared by many files (a later row for the same pair wins)
            {"mirror_id": m, "file_id": f, "kind": "missing"}
            for f in ids[::5]
            for m in mirror_ids[:2]
        ]
        unique = {(d["mirror_id"], d["file_id"]): d for d in diffs}
        await s.execute(insert(MirrorFileDiffRow), list(unique.values()))
        await s.execute(
            insert(MirrorFileConfirmationRow),
            [{"mirror_id": mirror_ids[0], "file_id": f, "checked_at": 3e6} for f in ids[::50]],
        )
        await bump_version(s, files=None)


def assert_same_index(got: Index, want: Index) -> None:
    """Equal content, position by position (sets may be bytes or arrays, shared or not)."""
    assert got.version == want.version and len(got) == len(want)
    assert got.paths == want.paths and got.file_ids == want.file_ids
    assert (got.sizes, got.mtimes, got.changed) == (want.sizes, want.mtimes, want.changed)
    assert (got.sha256, got.has_sha) == (want.sha256, want.has_sha)
    assert got.origin_flags == want.origin_flags and got.positions == want.positions
    assert sorted(got.dirs) == sorted(want.dirs)
    assert [None if b is None else list(b) for b in got.bad] == [
        None if b is None else list(b) for b in want.bad
    ]
    assert got.kinds == want.kinds
    assert got.confirmations == want.confirmations
    assert_same_answers(got, want, set(got.paths[:: max(1, len(got.paths) // 12)]), seed=3)


async def in_process_build(sessions: Sessions) -> Index:
    loader = DatabaseLoader(sessions, process_min_files=None)
    index = await loader.build(CONFIG, Clock())
    assert loader.diff_source == "in-process"
    return index


@pytest.mark.parametrize("mirror_count", [3, 300])  # 300: positions past 255 (array "H")
async def test_a_child_process_builds_the_same_index(
    db_url: str, sessions: Sessions, mirror_count: int
) -> None:
    # mirror ids with gaps, beyond 127 and 255: codes of several digits
    await populate(sessions, 2_000, [2 + 5 * i for i in range(mirror_count)])
    want = await in_process_build(sessions)
    loader = DatabaseLoader(sessions, process_min_files=0)
    got = await loader.build(CONFIG, Clock())
    # never silently in-process on SQLite; PostgreSQL always reads in-process
    assert loader.diff_source == ("process" if db_url.startswith("sqlite") else "in-process")
    assert any(b is not None for b in got.bad) and got.confirmations
    wide = mirror_count > 256
    assert all(isinstance(b, array) == wide for b in got.bad if b is not None)
    assert_same_index(got, want)
    small = DatabaseLoader(sessions)  # the default: a child only for large installs
    assert_same_index(await small.build(CONFIG, Clock()), want)
    assert small.diff_source == "in-process" and PROCESS_MIN_FILES > 3 * 2_000 + 3


@pytest.fixture
def sqlite_sessions(tmp_path: Path) -> Iterator[Sessions]:
    url = f"sqlite:///{tmp_path / 'index.db'}"
    asyncio.run(_migrate(url))
    engine = create_engine(url)
    yield session_factory(engine)
    asyncio.run(engine.dispose())


OLDER = HEADER.pack(MAGIC, -1, 0, 0, 0, False) + array("I", [0]).tobytes()
FAILURES = {
    "exit status": ("import sys; sys.exit(3)", "exit status 3"),
    "garbage": ("import sys; sys.stdout.buffer.write(b'nonsense')", "unreadable result"),
    "truncated": (
        "import subprocess, sys\n"
        f"real = {diff_reader.__file__!r}\n"
        "out = subprocess.run([sys.executable, '-I', '-S', real, *sys.argv[1:]],\n"
        "                     capture_output=True, check=True).stdout\n"
        "sys.stdout.buffer.write(out[:-3])",
        "truncated result",
    ),
    "older version": (f"import sys; sys.stdout.buffer.write({OLDER!r})", "older than"),
    "no answer": ("import time; time.sleep(30)", "no answer within"),
    "no interpreter": ("", "no child process"),
}


@pytest.mark.parametrize("failure", list(FAILURES))
async def test_a_failed_child_process_falls_back_to_reading_in_process(
    sqlite_sessions: Sessions,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: str,
) -> None:
    await populate(sqlite_sessions, 1_500, [1, 2, 3, 40, 200])
    want = await in_process_build(sqlite_sessions)
    script, reason = FAILURES[failure]
    (tmp_path / "reader.py").write_text(script)
    monkeypatch.setattr(index_load, "READER_SCRIPT", str(tmp_path / "reader.py"))
    monkeypatch.setattr(index_load, "PROCESS_TIMEOUT", 0.5)
    if failure == "no interpreter":
        monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    loader = DatabaseLoader(sqlite_sessions, process_min_files=0)
    with caplog.at_level(logging.WARNING, logger="mirrorhub.db.index_load"):
        got = await loader.build(CONFIG, Clock())
    assert loader.diff_source == "fallback"
    assert reason in caplog.text
    assert_same_index(got, want)


async def test_the_child_may_read_a_newer_version_and_the_next_refresh_catches_up(
    sqlite_sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change committed after the version was read but before the child reads: the child
    sees it (one snapshot, newer), the index keeps the older label, and the change log
    brings it in (again) at the next refresh: the result equals a build from scratch."""
    await populate(sqlite_sessions, 1_500, [1, 2, 3])
    start = index_load.DiffProcess.start
    changed = []

    def change_then_start(database: str, mirror_ids: Sequence[int]) -> index_load.DiffProcess:
        with sqlite3.connect(database) as db:
            file_id = db.execute("SELECT min(file_id) FROM mirror_file_diffs").fetchone()[0]
            db.execute("DELETE FROM mirror_file_diffs WHERE file_id = ?", (file_id,))
            db.execute(
                "INSERT INTO mirror_file_diffs (mirror_id, file_id, kind) VALUES (3, ?, 'size')",
                (file_id,),
            )
            (version,) = db.execute(
                "UPDATE index_version SET version = version + 1 WHERE id = 1 RETURNING version"
            ).fetchone()
            db.execute(
                "INSERT INTO index_changes (version, file_ids, created_at) VALUES (?, ?, 0)",
                (version, pack_ids([file_id])),
            )
            changed.append((file_id, version))
        return start(database, mirror_ids)

    monkeypatch.setattr(index_load.DiffProcess, "start", staticmethod(change_then_start))
    holder = IndexHolder(empty_index(CONFIG))
    loader = DatabaseLoader(sqlite_sessions, process_min_files=0)
    assert await refresh_once(holder, loader, CONFIG, Clock())
    assert loader.diff_source == "process"
    ((file_id, version),) = changed
    index = holder.current
    assert index.version == version - 1
    pos = index.position_of_id(file_id)
    assert pos is not None and list(index.bad[pos] or ()) == [2]  # the child's newer read
    monkeypatch.setattr(index_load.DiffProcess, "start", start)
    assert await refresh_once(holder, loader, CONFIG, Clock())
    assert holder.current is index and holder.counts.deltas == 1
    assert_same_index(index, await in_process_build(sqlite_sessions))


def test_the_reader_script_agrees_with_the_index_on_kinds() -> None:
    from mirrorhub import selection

    assert (diff_reader.KIND_MISSING, diff_reader.KIND_OUTDATED) == (
        selection.KIND_MISSING,
        selection.KIND_OUTDATED,
    )


def test_the_reader_converts_each_distinct_set_once_and_drops_unknown_mirrors() -> None:
    table = diff_reader.SetTable([5, 9])  # positions 0 and 1
    # "10": mirror 5 outdated, "19": mirror 9 missing, "12"/"13": mirror 6, not in the list
    assert list(table.numbers(["10,19", "19", "10,19"])) == [0, 1, 0]
    assert list(table.numbers(["12,19", "13", "19", "10"])) == [2, -1, 1, 3]
    sets = [
        (list(table.positions[a:b]), table.kinds[a:b]) for a, b in itertools.pairwise(table.offsets)
    ]
    missing, outdated = diff_reader.KIND_MISSING, diff_reader.KIND_OUTDATED
    assert sets == [
        ([0, 1], bytes([outdated, missing])),
        ([1], bytes([missing])),
        ([1], bytes([missing])),  # "12,19" without mirror 6
        ([0], bytes([outdated])),
    ]


async def test_the_reader_leaves_out_mirrors_the_parent_does_not_know(
    sqlite_sessions: Sessions, tmp_path: Path
) -> None:
    await populate(sqlite_sessions, 1_000, [1, 2, 3])
    expected: dict[int, list[tuple[int, int]]] = {}
    with sqlite3.connect(tmp_path / "index.db") as db:
        for mirror_id, file_id, kind in db.execute(
            "SELECT mirror_id, file_id, kind FROM mirror_file_diffs ORDER BY file_id, mirror_id"
        ):
            if mirror_id != 2:  # not in the list below
                code = diff_reader.KIND_MISSING if kind == "missing" else diff_reader.KIND_OUTDATED
                expected.setdefault(file_id, []).append(([3, 1].index(mirror_id), code))
    sets = diff_reader.read(str(tmp_path / "index.db"), [3, 1])
    assert sets.version == 1 and list(sets.file_ids) == sorted(expected)
    got = {
        file_id: sorted(
            zip(
                sets.positions[sets.offsets[n] : sets.offsets[n + 1]],
                sets.kinds[sets.offsets[n] : sets.offsets[n + 1]],
                strict=True,
            )
        )
        for file_id, n in zip(sets.file_ids, sets.set_of, strict=True)
    }
    assert got == {f: sorted(pairs) for f, pairs in expected.items()}
    assert diff_reader.decode(b"".join(diff_reader.encode(sets))) == sets
