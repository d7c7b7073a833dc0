"""Keep the probe history bounded: a pure plan plus its database apply.

- Rows older than ``probe_history_days`` are deleted.
- Rows older than :data:`DOWNSAMPLE_AFTER` (24 h) are merged into one row per mirror, scheme
  and hour: ``at`` = the hour's start, ``samples`` = how many probes it stands for, ``ok`` =
  a strict majority of those were ok, ``latency_ms`` = their mean (weighted by samples),
  ``status`` = the latest one, ``error`` = the most frequent error when not ok.

With a probe every five minutes that bounds the table to about a day of raw rows plus one
row per hour for the rest of the history, whatever the number of rounds. Only raw rows
(``samples = 1``) are read, and only whole hours past the cut-off, so each hour is merged
once; an hour that holds a single raw row is left as it is (it already is its own summary).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import ProbeResultRow
from mirrorhub.settings import Settings

DOWNSAMPLE_AFTER = 24 * 3600.0
HOUR = 3600
DELETE_CHUNK = 1000  # ids per DELETE ... IN (...)


@dataclass(frozen=True, slots=True)
class ProbeSample:
    """A probe_results row, as plain data."""

    id: int | None
    mirror_id: int
    scheme: str
    at: float  # POSIX seconds
    ok: bool
    status: int | None
    latency_ms: float | None
    error: str
    samples: int = 1


@dataclass(frozen=True, slots=True)
class RetentionPlan:
    delete_ids: tuple[int, ...]
    inserts: tuple[ProbeSample, ...]  # merged rows (id None)


def cutoffs(now: float, history_days: int) -> tuple[float, float]:
    """(delete rows before, downsample rows before); the latter is on a whole hour."""
    downsample_before = (now - DOWNSAMPLE_AFTER) // HOUR * HOUR
    return now - history_days * 86_400.0, downsample_before


def merge(rows: Sequence[ProbeSample], hour_start: float) -> ProbeSample:
    """One row that stands for ``rows`` (same mirror and scheme, same hour)."""
    total = sum(r.samples for r in rows)
    ok_samples = sum(r.samples for r in rows if r.ok)
    timed = [(r.latency_ms, r.samples) for r in rows if r.latency_ms is not None]
    weight = sum(n for _, n in timed)
    latency = sum(ms * n for ms, n in timed) / weight if weight else None
    ok = ok_samples * 2 > total
    errors: Counter[str] = Counter()
    for r in rows:
        if not r.ok and r.error:
            errors[r.error] += r.samples
    latest = max(rows, key=lambda r: r.at)
    return ProbeSample(
        id=None,
        mirror_id=rows[0].mirror_id,
        scheme=rows[0].scheme,
        at=hour_start,
        ok=ok,
        status=latest.status,
        latency_ms=latency,
        error="" if ok or not errors else errors.most_common(1)[0][0],
        samples=total,
    )


def plan_downsample(rows: Iterable[ProbeSample]) -> RetentionPlan:
    """Merge every (mirror, scheme, hour) group of two or more rows into one."""
    groups: dict[tuple[int, str, float], list[ProbeSample]] = defaultdict(list)
    for row in rows:
        groups[(row.mirror_id, row.scheme, row.at // HOUR * HOUR)].append(row)
    delete_ids: list[int] = []
    inserts: list[ProbeSample] = []
    for (_, _, hour), members in sorted(groups.items()):
        if len(members) < 2:
            continue
        delete_ids.extend(r.id for r in members if r.id is not None)
        inserts.append(merge(members, hour))
    return RetentionPlan(tuple(delete_ids), tuple(inserts))


# --- database ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RetentionResult:
    deleted: int  # rows past the history limit
    merged: int  # raw rows folded into hourly rows
    hourly_rows: int  # hourly rows written


def _posix(value: datetime) -> float:
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


async def apply_retention(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
) -> RetentionResult:
    """Delete and downsample probe history; one transaction per mirror for the merge."""
    delete_before, downsample_before = cutoffs(clock(), settings.probe_history_days)
    table = ProbeResultRow
    async with sessions() as session, session.begin():
        gone = await session.execute(delete(table).where(table.at < _ts(delete_before)))
        deleted = int(getattr(gone, "rowcount", 0) or 0)
        raw_window = (
            table.samples == 1,
            table.at >= _ts(delete_before),
            table.at < _ts(downsample_before),
        )
        mirror_ids = list(
            (await session.scalars(select(table.mirror_id).where(*raw_window).distinct())).all()
        )
    merged = hourly = 0
    for mirror_id in sorted(mirror_ids):
        async with sessions() as session, session.begin():
            found = await session.execute(
                select(
                    table.id,
                    table.scheme,
                    table.at,
                    table.ok,
                    table.status,
                    table.latency_ms,
                    table.error,
                ).where(table.mirror_id == mirror_id, *raw_window)
            )
            plan = plan_downsample(
                ProbeSample(i, mirror_id, s, _posix(at), ok, st, ms, err)
                for i, s, at, ok, st, ms, err in found
            )
            if not plan.inserts:
                continue
            ids = list(plan.delete_ids)
            for start in range(0, len(ids), DELETE_CHUNK):
                chunk = ids[start : start + DELETE_CHUNK]
                await session.execute(delete(table).where(table.id.in_(chunk)))
            await session.execute(
                insert(table),
                [
                    {
                        "mirror_id": r.mirror_id,
                        "scheme": r.scheme,
                        "at": _ts(r.at),
                        "ok": r.ok,
                        "status": r.status,
                        "latency_ms": r.latency_ms,
                        "error": r.error,
                        "samples": r.samples,
                    }
                    for r in plan.inserts
                ],
            )
            merged += len(ids)
            hourly += len(plan.inserts)
    return RetentionResult(deleted, merged, hourly)
