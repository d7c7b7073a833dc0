"""Dispatchers follow the database by applying the change log in place, on both databases:
after every kind of change the live index answers exactly as a full build would."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import services
from mirrorhub.db.index_load import DatabaseLoader
from mirrorhub.db.models import IndexChangeRow, OriginFileRow
from mirrorhub.index import IndexConfig, IndexHolder, empty_index, refresh_once
from mirrorhub.selection import Band
from mirrorhub.workers import recheck
from mirrorhub.workers.origin_scan import scan_origin
from mirrorhub.workers.reconcile import DiffKind
from mirrorhub.workers.scan_apply import DiffRow, ScanRecord, apply_scan
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
        assert await changelog.changed_files(s, 0, 1) == frozenset(ids.values())
    de = await mirror(sessions, "de", "DE", "52.5", "13.4")  # version 2: mirrors only
    await scan(
        sessions, de, clock.now, {ids["pub/1.0/a.iso"]: "missing", ids["other/x.bin"]: "size"}
    )
    await scan(sessions, de, clock.now + 1, {ids["pub/1.0/a.iso"]: "missing"})
    async with sessions() as s:
        assert await changelog.changed_files(s, 1, 2) == frozenset()
        both = frozenset({ids["pub/1.0/a.iso"], ids["other/x.bin"]})
        assert await changelog.changed_files(s, 2, 3) == both
        # only what changed: a.iso is missing there as before
        assert await changelog.changed_files(s, 3, 4) == frozenset({ids["other/x.bin"]})
        assert await changelog.changed_files(s, 0, 5) is None  # no entry for version 5


def test_packed_ids_round_trip() -> None:
    from mirrorhub.db.changelog import pack_ids, unpack_ids

    ids = {1, 2, 3, 2**40, 999_999}
    assert list(unpack_ids(pack_ids(ids))) == sorted(ids)
    assert list(unpack_ids(pack_ids([]))) == []
    assert len(pack_ids(range(1, 100_001))) < 8_000  # neighbouring ids compress well (800 KB raw)
