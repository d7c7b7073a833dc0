"""Write a mirror scan's result to the database, in one transaction.

A good scan replaces the mirror's difference set (``mirror_file_diffs``) whole, drops the
targeted re-check confirmations it supersedes, and moves ``mirror_state.last_good_scan`` to the
scan's **start** time, read before the scan reads ``origin_files``. Using the start, not the
end, is the safe choice. A version the scan's read of ``origin_files`` did not see committed
after that read began, and the origin scan stamps ``changed_at`` only after its commit (see
:mod:`mirrorhub.workers.origin_scan`), so that ``changed_at`` is after the start: the
dispatcher treats the file as stale on this mirror until the next scan (or a targeted
re-check) sees the new version. The compare could not know whether the mirror holds it.

A failed scan keeps the last good diffs and ``last_good_scan`` (the mirror keeps serving
what it was known to hold; files changed since then are stale anyway), counts consecutive
failures, and marks the mirror ``scan_failed`` only once ``failures_before_exclusion`` scans in
a row have failed, so one network hiccup does not take a mirror out of rotation.

Every scan, good or failed, adds a ``mirror_scans`` row. The index version is bumped when the
dispatchers must rebuild: after every good scan, and after a failed one only when it flips
``scan_failed``.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, Literal, NamedTuple

from sqlalchemy import delete, insert, select, text
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db import repositories
from mirrorhub.db.models import (
    MirrorFileConfirmationRow,
    MirrorFileDiffRow,
    MirrorRow,
    MirrorScanRow,
    MirrorStateRow,
    OriginFileRow,
)
from mirrorhub.db.repositories import bump_version
from mirrorhub.errors import NotFound, ScanFailed
from mirrorhub.workers.reconcile import DiffKind

Method = Literal["rsync", "http"]
# Rows per INSERT round trip: large enough to be fast, small enough for any driver's limits.
INSERT_BATCH = 5_000
PG_BATCH = 50_000


class DiffRow(NamedTuple):
    """One file the mirror does not hold in its origin version."""

    file_id: int
    kind: DiffKind
    seen_size: int | None = None
    seen_mtime: int | None = None


@dataclass(frozen=True, slots=True)
class ScanRecord:
    """What one scan found (counts are zero for a failed scan)."""

    mirror_id: int
    method: Method
    started_at: float  # POSIX seconds; becomes last_good_scan when ok
    duration: float  # seconds
    ok: bool
    files_seen: int = 0
    files_matching: int = 0
    missing: int = 0
    outdated: int = 0
    extra: int = 0
    tz_offset: int = 0  # seconds added to listing times to get UTC (HTTP listings)
    error: str = ""


@dataclass(frozen=True, slots=True)
class Applied:
    """What applying changed."""

    diffs_written: int
    scan_failures: int  # consecutive, after this scan
    scan_failed: bool  # excluded from selection after this scan
    version_bumped: bool


async def apply_scan(
    sessions: async_sessionmaker[AsyncSession],
    record: ScanRecord,
    diffs: Iterable[DiffRow] = (),
    *,
    failures_before_exclusion: int = 3,
) -> Applied:
    """Record ``record`` (and, when ok, replace the diff set with ``diffs``) and commit.

    Raises NotFound when the mirror was deleted meanwhile, ScanFailed on a database error.
    """
    rows = list(diffs) if record.ok else []
    try:
        try:
            return await _apply_once(sessions, record, rows, failures_before_exclusion)
        except IntegrityError:
            if not rows:
                raise
            # An origin file was deleted between loading the file list and now: its diff row
            # has no file to point at. Drop diffs for vanished files and try once more.
            rows = await _existing(sessions, rows)
            return await _apply_once(sessions, record, rows, failures_before_exclusion)
    except SQLAlchemyError as exc:
        raise ScanFailed(f"cannot record the scan: {exc}") from exc


async def _apply_once(
    sessions: async_sessionmaker[AsyncSession],
    record: ScanRecord,
    rows: Sequence[DiffRow],
    threshold: int,
) -> Applied:
    async with sessions() as session, session.begin():
        # Lock the mirror row (PostgreSQL) so two appliers of one mirror serialise, and notice
        # a mirror deleted while it was being scanned.
        mirror_id = await session.scalar(
            select(MirrorRow.id).where(MirrorRow.id == record.mirror_id).with_for_update()
        )
        if mirror_id is None:
            raise NotFound(f"mirror {record.mirror_id} no longer exists")
        await repositories.ensure_mirror_state(session, [record.mirror_id])
        state = await session.get(
            MirrorStateRow, record.mirror_id, with_for_update=True, populate_existing=True
        )
        assert state is not None
        session.add(_scan_row(record))
        changed: set[int] = set()
        if record.ok:
            changed = await _replace_diffs(session, record, rows)
            state.last_good_scan = record.started_at
            state.scan_failed = False
            state.scan_failures = 0
            state.last_scan_error = ""
            state.tz_offset = record.tz_offset
            bump = True
        else:
            was_failed = bool(state.scan_failed)
            state.scan_failures = (state.scan_failures or 0) + 1
            state.last_scan_error = record.error
            state.scan_failed = was_failed or state.scan_failures >= threshold
            bump = state.scan_failed != was_failed
        if bump:
            await bump_version(session, files=changed)
        return Applied(len(rows), state.scan_failures, state.scan_failed, bump)


async def _replace_diffs(
    session: AsyncSession, record: ScanRecord, rows: Sequence[DiffRow]
) -> set[int]:
    """Replace the mirror's difference set; the files whose entry changed (for the index
    change log: dispatchers re-read only those)."""
    mid = record.mirror_id
    before = await session.execute(
        select(MirrorFileDiffRow.file_id, MirrorFileDiffRow.kind).where(
            MirrorFileDiffRow.mirror_id == mid
        )
    )
    changed = {f for f, _ in {(f, k) for f, k in before} ^ {(r.file_id, r.kind) for r in rows}}
    # Confirmations older than this scan say nothing the new diff set does not say better.
    stale = (MirrorFileConfirmationRow.mirror_id == mid) & (
        MirrorFileConfirmationRow.checked_at < record.started_at
    )
    changed.update(await session.scalars(select(MirrorFileConfirmationRow.file_id).where(stale)))
    await session.execute(delete(MirrorFileDiffRow).where(MirrorFileDiffRow.mirror_id == mid))
    await session.execute(delete(MirrorFileConfirmationRow).where(stale))
    if session.get_bind().dialect.name == "postgresql":
        # One statement per batch with the columns as arrays: ~10x faster than executemany.
        for chunk in _chunks(rows, PG_BATCH):
            await session.execute(_PG_INSERT, _columns(mid, chunk))
        return changed
    # SQLite: executemany of one prepared statement, no ORM object per row.
    table: Any = MirrorFileDiffRow.__table__
    stmt = insert(table)
    for chunk in _chunks(rows, INSERT_BATCH):
        await session.execute(
            stmt,
            [
                {
                    "mirror_id": mid,
                    "file_id": r.file_id,
                    "kind": r.kind,
                    "seen_size": r.seen_size,
                    "seen_mtime": r.seen_mtime,
                }
                for r in chunk
            ],
        )
    return changed


_PG_INSERT = text(
    "INSERT INTO mirror_file_diffs (mirror_id, file_id, kind, seen_size, seen_mtime) "
    "SELECT :mirror_id, * FROM unnest("
    "CAST(:file_ids AS integer[]), CAST(:kinds AS varchar[]), "
    "CAST(:sizes AS bigint[]), CAST(:mtimes AS bigint[]))"
)


def _columns(mirror_id: int, rows: Sequence[DiffRow]) -> dict[str, Any]:
    return {
        "mirror_id": mirror_id,
        "file_ids": [r.file_id for r in rows],
        "kinds": [r.kind for r in rows],
        "sizes": [r.seen_size for r in rows],
        "mtimes": [r.seen_mtime for r in rows],
    }


def _scan_row(record: ScanRecord) -> MirrorScanRow:
    return MirrorScanRow(
        mirror_id=record.mirror_id,
        started_at=datetime.fromtimestamp(record.started_at, UTC),
        duration_seconds=record.duration,
        method=record.method,
        ok=record.ok,
        files_seen=record.files_seen,
        files_matching=record.files_matching,
        missing=record.missing,
        outdated=record.outdated,
        extra=record.extra,
        tz_offset=record.tz_offset,
        error=record.error[:2000],
    )


async def _existing(
    sessions: async_sessionmaker[AsyncSession], rows: Sequence[DiffRow]
) -> list[DiffRow]:
    alive: set[int] = set()
    async with sessions() as session:
        for chunk in _chunks(rows, INSERT_BATCH):
            ids = [r.file_id for r in chunk]
            found = await session.scalars(select(OriginFileRow.id).where(OriginFileRow.id.in_(ids)))
            alive.update(found)
    return [r for r in rows if r.file_id in alive]


def _chunks(rows: Sequence[DiffRow], size: int) -> Iterator[Sequence[DiffRow]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk
