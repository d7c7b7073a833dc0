"""Read-only SQL for the admin's mirror pages: coverage, scans, probe history, missing files.

Counts run in the database (a million origin files never come into Python); lists are paged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, exists, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from mirrorhub.db.models import (
    MirrorFileConfirmationRow,
    MirrorFileDiffRow,
    MirrorOperatorRow,
    MirrorScanRow,
    MirrorStateRow,
    OriginFileRow,
    ProbeResultRow,
)


@dataclass(frozen=True, slots=True)
class Coverage:
    in_scope: int
    differing: int  # missing, wrong size or wrong mtime
    stale: int  # changed at the origin after the last good scan, not re-checked since

    @property
    def fresh(self) -> int:
        return max(0, self.in_scope - self.differing - self.stale)

    @property
    def share(self) -> float | None:
        return self.fresh / self.in_scope if self.in_scope else None


@dataclass(frozen=True, slots=True)
class DiffLine:
    path: str
    kind: str
    size: int
    mtime: int
    seen_size: int | None
    seen_mtime: int | None


def _like_escape(prefix: str) -> str:
    return prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def scope_filter(scope: tuple[str, ...]) -> ColumnElement[bool] | None:
    """Origin files under any of the scope prefixes; None means the whole tree."""
    if not scope:
        return None
    return or_(*(OriginFileRow.path.like(_like_escape(p) + "%", escape="\\") for p in scope))


async def coverage(
    session: AsyncSession, mirror_id: int, scope: tuple[str, ...], last_good_scan: float | None
) -> Coverage:
    in_scope_q = select(func.count()).select_from(OriginFileRow)
    where = scope_filter(scope)
    if where is not None:
        in_scope_q = in_scope_q.where(where)
    in_scope = int(await session.scalar(in_scope_q) or 0)
    diff_q = (
        select(func.count())
        .select_from(MirrorFileDiffRow)
        .join(OriginFileRow, OriginFileRow.id == MirrorFileDiffRow.file_id)
        .where(MirrorFileDiffRow.mirror_id == mirror_id)
    )
    if where is not None:
        diff_q = diff_q.where(where)
    differing = int(await session.scalar(diff_q) or 0)
    if last_good_scan is None:
        return Coverage(in_scope, differing, in_scope - differing)  # never scanned: none fresh
    confirmed = exists().where(
        MirrorFileConfirmationRow.mirror_id == mirror_id,
        MirrorFileConfirmationRow.file_id == OriginFileRow.id,
        MirrorFileConfirmationRow.checked_at >= OriginFileRow.changed_at,
    )
    differs = exists().where(
        MirrorFileDiffRow.mirror_id == mirror_id, MirrorFileDiffRow.file_id == OriginFileRow.id
    )
    stale_q = (
        select(func.count())
        .select_from(OriginFileRow)
        .where(OriginFileRow.changed_at > last_good_scan, ~confirmed, ~differs)
    )
    if where is not None:
        stale_q = stale_q.where(where)
    stale = int(await session.scalar(stale_q) or 0)
    return Coverage(in_scope, differing, stale)


async def state_row(session: AsyncSession, mirror_id: int) -> MirrorStateRow | None:
    return await session.get(MirrorStateRow, mirror_id)


async def last_scans(session: AsyncSession, mirror_id: int, limit: int = 10) -> list[MirrorScanRow]:
    rows = await session.scalars(
        select(MirrorScanRow)
        .where(MirrorScanRow.mirror_id == mirror_id)
        .order_by(MirrorScanRow.started_at.desc())
        .limit(limit)
    )
    return list(rows)


async def probe_history(
    session: AsyncSession, mirror_id: int, days: int, now: datetime
) -> list[ProbeResultRow]:
    rows = await session.scalars(
        select(ProbeResultRow)
        .where(
            ProbeResultRow.mirror_id == mirror_id,
            ProbeResultRow.at >= now - timedelta(days=days),
        )
        .order_by(ProbeResultRow.at)
        .limit(20_000)
    )
    return list(rows)


async def diffs_page(
    session: AsyncSession, mirror_id: int, offset: int, limit: int
) -> tuple[list[DiffLine], int]:
    """Files the mirror misses or holds in another version, by path, with the total."""
    total = int(
        await session.scalar(
            select(func.count())
            .select_from(MirrorFileDiffRow)
            .where(MirrorFileDiffRow.mirror_id == mirror_id)
        )
        or 0
    )
    rows = await session.execute(
        select(
            OriginFileRow.path,
            MirrorFileDiffRow.kind,
            OriginFileRow.size,
            OriginFileRow.mtime,
            MirrorFileDiffRow.seen_size,
            MirrorFileDiffRow.seen_mtime,
        )
        .join(OriginFileRow, OriginFileRow.id == MirrorFileDiffRow.file_id)
        .where(MirrorFileDiffRow.mirror_id == mirror_id)
        .order_by(OriginFileRow.path)
        .offset(offset)
        .limit(limit)
    )
    return [DiffLine(*r) for r in rows], total


async def editable_ids(session: AsyncSession, user_id: int) -> set[int]:
    rows = await session.scalars(
        select(MirrorOperatorRow.mirror_id).where(MirrorOperatorRow.user_id == user_id)
    )
    return set(rows)


def utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


__all__ = [
    "Coverage",
    "DiffLine",
    "coverage",
    "diffs_page",
    "editable_ids",
    "last_scans",
    "probe_history",
    "state_row",
    "utc",
]
