"""``origin_files.changed_at`` is stamped only after the origin scan's write committed.

The race this guards against: a mirror scan reads its clock (its ``last_good_scan`` to be),
then reads ``origin_files`` before an origin batch commits, so it compares against the old
rows and records no difference for a new file. Had the batch's ``changed_at`` been read
before the commit, it could be earlier than the mirror scan's start, and the dispatcher
would send clients to a mirror that never had the file. Runs on SQLite and PostgreSQL, with
the real origin scan, the real mirror scan (only its listing is canned) and the index the
dispatchers build.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, insert, select, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.util import await_only

from mirrorhub import services
from mirrorhub.db import changelog
from mirrorhub.db.index_load import DatabaseLoader
from mirrorhub.db.models import MirrorStateRow, OriginFileRow
from mirrorhub.domain import CHANGE_PENDING, Client, Options, Reason
from mirrorhub.errors import ScanFailed
from mirrorhub.index import Index, IndexConfig, IndexHolder, empty_index, refresh_once
from mirrorhub.settings import Settings
from mirrorhub.workers import mirror_scan, origin_scan
from mirrorhub.workers.mirror_scan import ScanReport, scan_mirror
from mirrorhub.workers.origin_scan import Written, scan_origin, stamp_changes
from mirrorhub.workers.scan_apply import ScanRecord, apply_scan
from mirrorhub.workers.seen import SeenFile
from tests.servers import make_tree
from tests.workers.clocks import Ticks

Sessions = async_sessionmaker[AsyncSession]
T0 = 1_700_000_000
OLD, NEW = "pub/a.iso", "pub/b.iso"
CONFIG = IndexConfig()
CLIENT = Client(ipaddress.ip_address("192.0.2.7"))


def before_commit(
    engine: AsyncEngine, hook: Callable[[Session], Awaitable[None] | None]
) -> Sessions:
    """Sessions that call ``hook(session)`` inside every commit, before it happens, and
    await what it returns: commits run in SQLAlchemy's greenlet, which may wait on the loop."""

    class HookedSession(Session):
        pass

    def listener(session: Session) -> None:
        waiting = hook(session)
        if waiting is not None:
            await_only(waiting)

    event.listen(HookedSession, "before_commit", listener)
    return async_sessionmaker(engine, expire_on_commit=False, sync_session_class=HookedSession)


async def add_mirror(sessions: Sessions) -> int:
    record = await services.add_mirror(
        sessions,
        {"name": "m", "http_url": "http://m.example/", "rsync_url": "rsync://m.example/pub/"},
    )
    return record.mirror.id


def decided(index: Index, path: str) -> tuple[str | None, list[tuple[str, Reason]]]:
    """What a dispatcher with ``index`` answers for ``path``: (the mirror chosen, why the
    others are not)."""
    pos = index.lookup(path)
    assert pos is not None, path
    decision = index.decide(pos, CLIENT, Options(), random.Random(1), full=True)
    fast = index.fast_pick(pos, index.profile(CLIENT, Options()), random.Random(1), 0.0)
    chosen = decision.chosen.mirror.name if decision.chosen else None
    assert (fast is None) == (chosen is None)  # the hot path agrees
    return chosen, [(e.mirror.name, e.reason) for e in decision.excluded]


async def decide(sessions: Sessions, path: str) -> tuple[str | None, list[tuple[str, Reason]]]:
    """What a dispatcher answers for ``path`` from an index built now."""
    return decided(await DatabaseLoader(sessions).build(CONFIG, lambda: 0.0), path)


async def changed_at(sessions: Sessions, path: str) -> float:
    async with sessions() as s:
        value = await s.scalar(select(OriginFileRow.changed_at).where(OriginFileRow.path == path))
    assert value is not None
    return float(value)


async def last_good_scan(sessions: Sessions, mirror_id: int) -> float:
    async with sessions() as s:
        value = await s.scalar(
            select(MirrorStateRow.last_good_scan).where(MirrorStateRow.mirror_id == mirror_id)
        )
    assert value is not None
    return float(value)


async def index_version(sessions: Sessions) -> int:
    async with sessions() as s:
        return int((await s.execute(text("SELECT version FROM index_version"))).scalar_one())


async def test_a_mirror_scan_that_read_the_origin_before_the_commit_stays_stale(
    engine: AsyncEngine, sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Ticks()
    origin = make_tree(tmp_path / "origin", {OLD: (3000, T0)})
    await scan_origin(sessions, origin, clock=clock)
    mirror_id = await add_mirror(sessions)

    # The mirror holds a.iso only. Its listing is canned; the rest of the scan is real.
    listed, go = asyncio.Event(), asyncio.Event()

    async def listing(*_: Any) -> tuple[list[SeenFile], int]:
        listed.set()
        await go.wait()
        return [SeenFile(OLD, 3000, 3000, T0)], 1

    monkeypatch.setattr(mirror_scan, "list_mirror", listing)

    # b.iso is published. Just before the origin scan commits the batch holding it, a mirror
    # scan starts: it reads its clock and then origin_files (the old rows), and lists.
    make_tree(origin, {NEW: (2000, T0)})
    scans: list[asyncio.Task[ScanReport]] = []

    async def mirror_scan_reads_the_origin() -> None:
        scans.append(asyncio.create_task(scan_mirror(sessions, Settings(), "m", clock=clock)))
        await asyncio.wait_for(listed.wait(), 10)

    def in_commit(session: Session) -> Awaitable[None] | None:
        query = select(func.count()).where(OriginFileRow.path == NEW)
        if scans or not session.execute(query).scalar():
            return None  # done already, or not the transaction that writes b.iso
        return mirror_scan_reads_the_origin()

    result = await scan_origin(before_commit(engine, in_commit), origin, clock=clock)
    assert result.new == 1 and scans, "the hook did not run inside the origin scan's commit"
    go.set()
    report = await asyncio.wait_for(scans[0], 10)
    assert report.ok and (report.matching, report.missing) == (1, 0)  # it never saw b.iso

    # The mirror's scan started before b.iso's changed_at, so b.iso is stale there and the
    # origin serves it; a.iso, which the scan did compare, is fresh.
    assert await decide(sessions, NEW) == (None, [("m", Reason.STALE)])
    assert await decide(sessions, OLD) == ("m", [])
    assert await last_good_scan(sessions, mirror_id) < await changed_at(sessions, NEW)


async def test_rows_left_pending_by_a_dead_scan_are_stamped_by_the_next(
    sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = Ticks()
    origin = make_tree(tmp_path / "origin", {OLD: (3000, T0)})
    await scan_origin(sessions, origin, clock=clock)
    mirror_id = await add_mirror(sessions)

    async def dies(*_: Any) -> None:
        raise OperationalError("UPDATE origin_files", {}, Exception("connection lost"))

    make_tree(origin, {NEW: (2000, T0)})
    monkeypatch.setattr(origin_scan, "stamp_changes", dies)
    version = await index_version(sessions)
    with pytest.raises(ScanFailed, match="connection lost"):
        await scan_origin(sessions, origin, clock=clock)
    monkeypatch.undo()
    assert await changed_at(sessions, NEW) == CHANGE_PENDING
    assert await index_version(sessions) == version + 1  # announced while pending

    # A mirror scanned meanwhile, whatever it saw, is not fresh for a pending file.
    await apply_scan(sessions, ScanRecord(mirror_id, "rsync", clock(), 1.0, True), [])
    assert await decide(sessions, NEW) == (None, [("m", Reason.STALE)])
    version = await index_version(sessions)

    # The next scan has nothing to write, yet stamps b.iso with a time read after that write
    # committed, and announces it.
    result = await scan_origin(sessions, origin, clock=clock)
    assert (result.new, result.changed, result.unchanged) == (0, 0, 2)
    stamped = await changed_at(sessions, NEW)
    assert await last_good_scan(sessions, mirror_id) < stamped < CHANGE_PENDING
    assert await index_version(sessions) == version + 1
    async with sessions() as s:
        new_id = await s.scalar(select(OriginFileRow.id).where(OriginFileRow.path == NEW))
        assert await changelog.changed_files(s, version, version + 1) == frozenset({new_id})
    assert await decide(sessions, NEW) == (None, [("m", Reason.STALE)])
    # The scan after that finds nothing to stamp.
    await scan_origin(sessions, origin, clock=clock)
    assert await index_version(sessions) == version + 1


async def test_a_stamp_dates_only_the_facts_its_scan_wrote(sessions: Sessions) -> None:
    """Rows this scan wrote with (size 1, mtime 1, no sha256): pending ones are stamped, an
    older time is raised, a newer one kept. Rows holding other facts, written by another scan
    since, are left alone, pending or not."""
    rows = {
        "pending": (1, CHANGE_PENDING),
        "older": (1, 50.0),
        "newer": (1, 500.0),
        "other-pending": (2, CHANGE_PENDING),
        "other-older": (2, 50.0),
    }
    async with sessions() as s, s.begin():
        await s.execute(
            insert(OriginFileRow),
            [{"path": p, "size": n, "mtime": n, "changed_at": t} for p, (n, t) in rows.items()],
        )
        found = await s.execute(select(OriginFileRow.path, OriginFileRow.id))
        ids: dict[str, int] = {path: row_id for path, row_id in found}
    version = await index_version(sessions)
    written = [Written(i, 1, 1, None) for i in ids.values()]
    await stamp_changes(sessions, written, lambda: 100.0, batch_size=2)
    assert {p: await changed_at(sessions, p) for p in rows} == {
        "pending": 100.0,
        "older": 100.0,
        "newer": 500.0,
        "other-pending": CHANGE_PENDING,
        "other-older": 50.0,
    }
    assert await index_version(sessions) == version + 3  # one bump per batch
    # The sha256 counts too, NULL included.
    await stamp_changes(sessions, [Written(ids["other-pending"], 2, 2, "ab" * 32)], lambda: 200.0)
    assert await changed_at(sessions, "other-pending") == CHANGE_PENDING
    await stamp_changes(sessions, [Written(ids["other-pending"], 2, 2, None)], lambda: 200.0)
    assert await changed_at(sessions, "other-pending") == 200.0


async def test_a_batch_committed_without_its_stamp_is_announced(
    sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write itself bumps index_version: should the stamp never run (crash, Ctrl-C, lost
    connection), dispatchers following the change log still drop the old version of a
    changed file and learn of a new one, both served by the origin, not only after the next
    origin scan."""
    clock = Ticks()
    origin = make_tree(tmp_path / "origin", {OLD: (3000, T0)})
    await scan_origin(sessions, origin, clock=clock)
    mirror_id = await add_mirror(sessions)
    await apply_scan(sessions, ScanRecord(mirror_id, "rsync", clock(), 1.0, True), [])
    holder = IndexHolder(empty_index(CONFIG))
    loader = DatabaseLoader(sessions)
    assert await refresh_once(holder, loader, CONFIG, lambda: 0.0)
    assert decided(holder.current, OLD) == ("m", [])

    async def dies(*_: Any) -> None:
        raise OperationalError("UPDATE origin_files", {}, Exception("connection lost"))

    make_tree(origin, {OLD: (3100, T0 + 60), NEW: (2000, T0)})
    monkeypatch.setattr(origin_scan, "stamp_changes", dies)
    with pytest.raises(ScanFailed, match="connection lost"):
        await scan_origin(sessions, origin, clock=clock)
    assert await changed_at(sessions, OLD) == await changed_at(sessions, NEW) == CHANGE_PENDING

    assert await refresh_once(holder, loader, CONFIG, lambda: 0.0)
    assert (holder.counts.full_builds, holder.counts.deltas) == (1, 1)  # from the change log
    index = holder.current
    for path, size in ((OLD, 3100), (NEW, 2000)):
        pos = index.lookup(path)
        assert pos is not None, path
        assert index.decide(pos, CLIENT, Options(), random.Random(1), full=True).file.size == size
        assert decided(index, path) == (None, [("m", Reason.STALE)])


def test_pending_is_later_than_any_clock_and_exact() -> None:
    assert CHANGE_PENDING > 4_102_444_800  # 2100-01-01
    assert CHANGE_PENDING == 2**53 and float(int(CHANGE_PENDING)) == CHANGE_PENDING


@pytest.mark.parametrize("stamper", ["batch", "repair"])
async def test_a_stamp_never_dates_another_scans_newer_version(
    sessions: Sessions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stamper: str
) -> None:
    """Two origin scans overlap (a worker's and ``mirrorhub scan-origin``, which takes no
    lease). Scan A has committed b.iso v1 at CHANGE_PENDING and read its clock (``batch``:
    the stamp of its own batch; ``repair``: the stamp of v1 left pending by a dead scan) but
    not stamped yet. Meanwhile a mirror scan compares v1 (the mirror holds it), and scan B
    writes v2, commits, and dies before its stamp. A's stamp, read before B's commit, must
    not date v2: the mirror never compared v2."""
    clock = Ticks()
    origin = make_tree(tmp_path / "origin", {OLD: (3000, T0)})
    await scan_origin(sessions, origin, clock=clock)
    await add_mirror(sessions)
    make_tree(origin, {NEW: (2000, T0)})  # v1

    async def dies(*_: Any) -> None:
        raise OperationalError("UPDATE origin_files", {}, Exception("connection lost"))

    if stamper == "repair":  # a scan wrote v1 and died before its stamp
        monkeypatch.setattr(origin_scan, "stamp_changes", dies)
        with pytest.raises(ScanFailed):
            await scan_origin(sessions, origin, clock=clock)
        monkeypatch.undo()
        assert await changed_at(sessions, NEW) == CHANGE_PENDING

    async def listing(*_: Any) -> tuple[list[SeenFile], int]:  # the mirror holds v1
        return [SeenFile(OLD, 3000, 3000, T0), SeenFile(NEW, 2000, 2000, T0)], 2

    monkeypatch.setattr(mirror_scan, "list_mirror", listing)
    real_stamp = origin_scan.stamp_changes
    calls: list[int] = []

    async def meanwhile() -> None:
        report = await scan_mirror(sessions, Settings(), "m", clock=clock)
        assert report.ok and (report.matching, report.missing) == (2, 0)  # compared v1
        make_tree(origin, {NEW: (2500, T0 + 60)})  # v2
        with pytest.raises(ScanFailed, match="connection lost"):
            await scan_origin(sessions, origin, clock=clock)  # B

    async def stamp(*args: Any) -> None:
        calls.append(len(calls))
        if len(calls) == 1:  # A: reads its clock, then the others run, then it stamps
            stamp_sessions, rows, stamp_clock, *rest = args
            now = stamp_clock()
            await meanwhile()
            await real_stamp(stamp_sessions, rows, lambda: now, *rest)
        elif len(calls) == 2:  # B stamps v1, which it finds pending, at its start
            await real_stamp(*args)
        else:  # B dies between writing v2 and stamping it
            await dies()

    monkeypatch.setattr(origin_scan, "stamp_changes", stamp)
    await scan_origin(sessions, origin, clock=clock)  # A
    assert len(calls) == 3

    # v2 is pending (no mirror compared it): the origin serves it, until the next scan
    # stamps it with a time read after B's commit.
    async with sessions() as s:
        size = await s.scalar(select(OriginFileRow.size).where(OriginFileRow.path == NEW))
    assert size == 2500
    assert await decide(sessions, NEW) == (None, [("m", Reason.STALE)])
    assert await changed_at(sessions, NEW) == CHANGE_PENDING
    monkeypatch.undo()
    await scan_origin(sessions, origin, clock=clock)
    assert await changed_at(sessions, NEW) < CHANGE_PENDING
    assert await decide(sessions, NEW) == (None, [("m", Reason.STALE)])
