"""Health probes, the database part: plan a round (who, what to request, the origin's trace
time) and write its outcome (``probe_results`` rows, ``mirror_state`` health and lag).

The index version is bumped only when something the dispatcher uses changed: a mirror's
health, its ``lagging`` flag or its set of DOWN schemes (the per-scheme states and counters
in ``mirror_state.scheme_health`` change every round and are not worth a rebuild), so a round
that changes nothing does not make every dispatcher rebuild its index.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import insert, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db import repositories
from mirrorhub.db.models import (
    MirrorFileDiffRow,
    MirrorRow,
    MirrorStateRow,
    OriginFileRow,
    ProbeResultRow,
)
from mirrorhub.db.repositories import bump_version, row_to_mirror
from mirrorhub.domain import Health, Mirror, Scheme
from mirrorhub.errors import NotFound, ProbeFailed
from mirrorhub.settings import Settings
from mirrorhub.workers.health import (
    MirrorProbe,
    Target,
    choose_target,
    decode_scheme_health,
    down_schemes,
    encode_scheme_health,
    mirror_health,
    next_round_counts,
    next_scheme_health,
)
from mirrorhub.workers.trace import TRACE_MAX_BYTES, LagState, is_lagging, next_lag, parse_trace

log = logging.getLogger(__name__)

SMALL_FILES = 64  # candidates per distinct scope for the "smallest held file" target
APPLY_BATCH = 200  # mirrors per write transaction
ERROR_CHARS = 256  # mirror_state.last_probe_error and probe_results.error are String(256)


def _ts(value: float) -> datetime:
    return datetime.fromtimestamp(value, UTC)


def _posix(value: datetime | None) -> float | None:
    if value is None:
        return None
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


# --- the origin's trace time ------------------------------------------------------------


def _read_head(path: Path) -> bytes | None:
    try:
        with path.open("rb") as fh:
            return fh.read(TRACE_MAX_BYTES + 1)
    except FileNotFoundError:
        return None


async def origin_trace_time(session: AsyncSession, settings: Settings, now: float) -> float | None:
    """When the origin last published, from its trace file; None: no lag judgement.

    The local file ``origin_dir/trace_file`` is read when the worker has the tree (exact);
    otherwise the origin scan's record of that file gives its mtime, which the origin set
    when it wrote the file. A trace file that exists but does not parse is logged and
    treated as absent: judging mirrors against a broken clock would exclude them all.
    """
    if settings.trace_file is None:
        return None
    if settings.origin_dir is not None:
        path = settings.origin_dir / settings.trace_file
        try:
            data = await asyncio.to_thread(_read_head, path)
        except OSError as exc:
            log.warning("cannot read the origin trace file %s: %s", path, exc)
            return None
        if data is not None:
            try:
                return parse_trace(data, now)
            except ProbeFailed as exc:
                log.warning("origin trace file %s: %s", path, exc)
                return None
    mtime = await session.scalar(
        select(OriginFileRow.mtime).where(OriginFileRow.path == settings.trace_file)
    )
    return float(mtime) if mtime is not None else None


# --- planning a round -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedProbe:
    mirror: Mirror
    target: Target


async def load_probe_plan(
    session: AsyncSession,
    settings: Settings,
    names: Sequence[str] | None,
    origin_trace: float | None,
) -> list[PlannedProbe]:
    """The mirrors to probe and what to request from each.

    ``names=None`` means every enabled mirror; named mirrors are probed even when disabled
    (an admin checking a mirror before enabling it). An unknown name raises NotFound.
    """
    query = (
        select(MirrorRow, MirrorStateRow.last_good_scan)
        .outerjoin(MirrorStateRow, MirrorStateRow.mirror_id == MirrorRow.id)
        .order_by(MirrorRow.name)
    )
    if names is None:
        query = query.where(MirrorRow.enabled.is_(True))
    else:
        query = query.where(MirrorRow.name.in_(list(names)))
    rows = (await session.execute(query)).all()
    if names is not None:
        unknown = sorted(set(names) - {row.name for row, _ in rows})
        if unknown:
            raise NotFound(f"no mirror named {', '.join(unknown)}")
    mirrors = [(row_to_mirror(row), last_good is not None) for row, last_good in rows]
    trace_path = settings.trace_file if origin_trace is not None else None

    # Smallest files, once per distinct scope (few), not once per mirror.
    small: dict[tuple[str, ...], list[tuple[int, str]]] = {}
    for mirror, scanned in mirrors:
        if scanned and mirror.scope not in small:
            small[mirror.scope] = await _smallest_files(session, mirror.scope)
    file_ids = {file_id for files in small.values() for file_id, _ in files}
    diffs: dict[int, set[int]] = defaultdict(set)
    if file_ids:
        found = await session.execute(
            select(MirrorFileDiffRow.mirror_id, MirrorFileDiffRow.file_id).where(
                MirrorFileDiffRow.file_id.in_(sorted(file_ids))
            )
        )
        for mirror_id, file_id in found:
            diffs[mirror_id].add(file_id)
    frozen = {mirror_id: frozenset(ids) for mirror_id, ids in diffs.items()}
    return [
        PlannedProbe(
            mirror,
            choose_target(mirror, scanned, trace_path, small.get(mirror.scope, []), frozen),
        )
        for mirror, scanned in mirrors
    ]


async def _smallest_files(session: AsyncSession, scope: tuple[str, ...]) -> list[tuple[int, str]]:
    query = select(OriginFileRow.id, OriginFileRow.path)
    if scope:
        query = query.where(or_(*(OriginFileRow.path.startswith(p) for p in scope)))
    query = query.order_by(OriginFileRow.size, OriginFileRow.id).limit(SMALL_FILES)
    return [(file_id, path) for file_id, path in await session.execute(query)]


# --- writing a round --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MirrorOutcome:
    """A mirror after a round: what the probes saw and the state they led to."""

    probe: MirrorProbe
    health: Health
    lag_seconds: float | None
    lagging: bool
    changed: bool  # health, lagging or down_schemes changed (the index version was bumped)
    down_schemes: frozenset[Scheme] = frozenset()  # offered schemes now DOWN


async def apply_round(
    sessions: async_sessionmaker[AsyncSession],
    probes: Sequence[MirrorProbe],
    settings: Settings,
    origin_trace: float | None,
    now: float,
) -> list[MirrorOutcome]:
    """Record a round, one transaction per :data:`APPLY_BATCH` mirrors."""
    outcomes: list[MirrorOutcome] = []
    for start in range(0, len(probes), APPLY_BATCH):
        batch = probes[start : start + APPLY_BATCH]
        async with sessions() as session, session.begin():
            outcomes.extend(await _apply_batch(session, batch, settings, origin_trace, now))
    return outcomes


async def _apply_batch(
    session: AsyncSession,
    probes: Sequence[MirrorProbe],
    settings: Settings,
    origin_trace: float | None,
    now: float,
) -> list[MirrorOutcome]:
    wanted = sorted({p.mirror_id for p in probes})
    # A mirror deleted while it was probed has nothing left to record.
    existing = set(
        (await session.scalars(select(MirrorRow.id).where(MirrorRow.id.in_(wanted)))).all()
    )
    probes = [p for p in probes if p.mirror_id in existing]
    if not probes:
        return []
    ids = sorted(existing)
    await repositories.ensure_mirror_state(session, ids)
    # Row locks (PostgreSQL) keep two overlapping rounds from losing counter updates; only
    # the probe columns are written, so a concurrent scan's columns are left alone.
    states = {
        row.mirror_id: row
        for row in (
            await session.scalars(
                select(MirrorStateRow)
                .where(MirrorStateRow.mirror_id.in_(ids))
                .order_by(MirrorStateRow.mirror_id)
                .with_for_update()
                .execution_options(populate_existing=True)
            )
        ).all()
    }
    await session.execute(
        insert(ProbeResultRow),
        [
            {
                "mirror_id": p.mirror_id,
                "scheme": str(r.scheme),
                "at": _ts(r.at),
                "ok": r.ok,
                "status": r.status,
                "latency_ms": r.latency_ms,
                "error": r.error[:ERROR_CHARS],
                "samples": 1,
            }
            for p in probes
            for r in p.results
        ],
    )
    outcomes = [_update_state(states[p.mirror_id], p, settings, origin_trace, now) for p in probes]
    if any(o.changed for o in outcomes):
        await bump_version(session, files=())
    return outcomes


def _update_state(
    row: MirrorStateRow,
    probe: MirrorProbe,
    settings: Settings,
    origin_trace: float | None,
    now: float,
) -> MirrorOutcome:
    try:
        old_health = Health(row.health)
    except ValueError:
        old_health = Health.UNKNOWN
    old_schemes = decode_scheme_health(row.scheme_health)
    schemes = next_scheme_health(
        old_schemes,
        ((r.scheme, r.ok) for r in probe.results),
        down_after=settings.probe_down_after,
        up_after=settings.probe_up_after,
    )
    health = mirror_health(schemes)
    old_down, down = down_schemes(old_schemes), down_schemes(schemes)
    failures, successes = next_round_counts(
        row.probe_failures or 0, row.probe_successes or 0, probe.ok
    )
    old_lagging = bool(row.lagging)
    lag = row.lag_seconds
    mirror_trace = probe.mirror_trace
    if not probe.target.is_trace or origin_trace is None:
        lag = None  # no trace to compare: no lag judgement (and no exclusion for lag)
    elif mirror_trace is not None:
        prev = LagState(row.trace_time, row.lag_seconds, _posix(row.trace_checked_at))
        lag = next_lag(prev, mirror_trace, origin_trace, now)
        row.trace_time = mirror_trace
        row.trace_checked_at = _ts(now)
    # else: the trace could not be read this round; the last judgement stands.
    lagging = is_lagging(lag, settings.max_lag_seconds)

    row.health = str(health)
    row.scheme_health = encode_scheme_health(schemes)
    row.probe_failures = failures
    row.probe_successes = successes
    row.last_probe_at = _ts(now)
    row.last_probe_error = probe.error[:ERROR_CHARS]
    row.lag_seconds = lag
    row.lagging = lagging
    changed = health is not old_health or lagging != old_lagging or down != old_down
    return MirrorOutcome(probe, health, lag, lagging, changed, down)
