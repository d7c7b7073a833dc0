"""The SQL behind the status page: a handful of grouped queries, never one per file.

Sized for 500 mirrors x 1,000,000 origin files:

- mirrors + mirror_state: one join, one row per mirror;
- coverage: one scan of ``origin_files`` grouped by ``changed_at`` (origin scans stamp whole
  batches, so the groups are few) with one COUNT column per distinct mirror scope; one COUNT
  of diffs per mirror (joined to the file's ``changed_at``); the re-check confirmations
  (a small table). :class:`StatusSource` reuses histograms until the origin changes and a
  mirror's diff count until its next good scan;
- availability: probe rows of the last 24 h summed per (mirror, hour) in SQL. Probe rows are
  appended, so between full reads (one per hour) only rows with a higher id are read.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import Integer, and_, case, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from mirrorhub.db.models import (
    MirrorFileConfirmationRow,
    MirrorFileDiffRow,
    MirrorRow,
    MirrorStateRow,
    OriginFileRow,
    ProbeResultRow,
)
from mirrorhub.domain import CHANGE_PENDING
from mirrorhub.heap import release_free_heap_later
from mirrorhub.status import (
    HOUR,
    WINDOW_HOURS,
    Confirmation,
    CoverageInputs,
    Histogram,
    MirrorFacts,
    StatusModel,
    build_status,
)
from mirrorhub.workers.health import decode_scheme_health, down_schemes

SCOPE_COLUMNS = 100  # COUNT columns per origin_files scan; more scopes take more scans
ROWS_PER_FETCH = 10_000
Buckets = dict[int, dict[int, tuple[int, int]]]  # mirror id -> hour -> (good, samples)
# What a mirror's diff count depends on: its last good scan, its scope, the origin histogram.
OriginSignature = tuple[int, int, float, int]  # see origin_signature
DiffKey = tuple[float | None, tuple[str, ...], OriginSignature | None]


def _seconds(value: datetime | None) -> float | None:
    if value is None:
        return None
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    return (value if value.tzinfo is not None else value.replace(tzinfo=UTC)).timestamp()


def _scope_condition(scope: tuple[str, ...]) -> ColumnElement[bool]:
    # substr() equality, not LIKE (case-insensitive on SQLite, wildcards) nor a range
    # (PostgreSQL's collation may not order by code point).
    return or_(*(func.substr(OriginFileRow.path, 1, len(p)) == p for p in scope))


async def load_mirrors(session: AsyncSession) -> list[MirrorFacts]:
    rows = await session.execute(
        select(MirrorRow, MirrorStateRow)
        .outerjoin(MirrorStateRow, MirrorStateRow.mirror_id == MirrorRow.id)
        .order_by(MirrorRow.id)
    )
    out: list[MirrorFacts] = []
    for m, s in rows:
        out.append(
            MirrorFacts(
                id=m.id,
                name=m.name,
                country=m.country,
                latitude=m.latitude,
                longitude=m.longitude,
                enabled=m.enabled,
                capacity=m.capacity,
                scope=tuple(m.scope.split()),
                health=s.health if s is not None else "unknown",
                lagging=s.lagging if s is not None else False,
                lag_seconds=s.lag_seconds if s is not None else None,
                scan_failed=s.scan_failed if s is not None else False,
                last_good_scan=s.last_good_scan if s is not None else None,
                last_scan_error=s.last_scan_error if s is not None else "",
                down_schemes=tuple(
                    sorted(down_schemes(decode_scheme_health(s.scheme_health)))
                    if s is not None
                    else ()
                ),
                last_probe_at=_seconds(s.last_probe_at) if s is not None else None,
                last_probe_error=s.last_probe_error if s is not None else "",
            )
        )
    return out


def disjoint(scope: tuple[str, ...]) -> tuple[str, ...]:
    """The scope's prefixes without those inside another one ("pub/" covers "pub/iso/"),
    so per-prefix counts add up to the scope's count."""
    return tuple(p for p in scope if not any(q != p and p.startswith(q) for q in scope))


def _successor(prefix: str) -> str:
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


async def _histogram(session: AsyncSession, prefix: str) -> tuple[array[float], array[int]]:
    """(changed_at values ascending, files at each) under ``prefix``, read in batches."""
    query = (
        select(OriginFileRow.changed_at, func.count())
        .group_by(OriginFileRow.changed_at)
        .order_by(OriginFileRow.changed_at)
    )
    if prefix:
        # The range walks the unique index on path (SQLite compares bytes); substr() keeps
        # the answer exact whatever the collation.
        query = query.where(
            OriginFileRow.path >= prefix,
            OriginFileRow.path < _successor(prefix),
            func.substr(OriginFileRow.path, 1, len(prefix)) == prefix,
        )
    times, counts = array("d"), array("q")
    result = await session.stream(query)
    async for rows in result.partitions(ROWS_PER_FETCH):
        for t, n in rows:
            times.append(t)
            counts.append(n)
    return times, counts


def _merged(parts: Sequence[tuple[array[float], array[int]]]) -> Histogram:
    """One histogram of several disjoint prefixes' (times, counts)."""
    if len(parts) == 1:
        return Histogram.from_sorted(*parts[0])
    total: dict[float, int] = {}
    for times, counts in parts:
        for t, n in zip(times, counts, strict=True):
            total[t] = total.get(t, 0) + n
    ordered = sorted(total.items())
    return Histogram.from_sorted(array("d", [t for t, _ in ordered]), [n for _, n in ordered])


async def origin_signature(session: AsyncSession) -> OriginSignature:
    """(files, highest id, newest stamped changed_at, files pending): moves whenever a file
    is added, removed or changed, so histograms are reloaded only then. A changed file is
    written pending (``CHANGE_PENDING``), then stamped with a newer time than any before;
    the pending ones are counted apart, so a stamp still moves the signature while another
    batch is pending (the newest changed_at alone would stay at ``CHANGE_PENDING``)."""
    pending = OriginFileRow.changed_at >= CHANGE_PENDING
    n, top, newest, waiting = (
        await session.execute(
            select(
                func.count(),
                func.max(OriginFileRow.id),
                func.max(case((~pending, OriginFileRow.changed_at))),
                func.count(case((pending, 1))),
            )
        )
    ).one()
    return int(n), int(top or 0), float(newest or 0.0), int(waiting)


async def load_histograms(
    session: AsyncSession, scopes: Iterable[tuple[str, ...]]
) -> dict[tuple[str, ...], Histogram]:
    """In-scope files per ``changed_at``, per scope; the empty scope is the whole tree.

    SQLite: one index range per distinct prefix. PostgreSQL (whose collation may not order by
    code point, so a range could miss rows): one scan with a COUNT column per scope. Rows are
    read in batches into flat arrays: the event loop keeps answering in between, and an
    origin with a distinct time per file does not hold a million tuples.
    """
    wanted = sorted(set(scopes))
    out: dict[tuple[str, ...], Histogram] = {}
    if session.get_bind().dialect.name == "sqlite":
        prefixes = {p for scope in wanted for p in disjoint(scope)} | {""}
        per_prefix = {p: await _histogram(session, p) for p in sorted(prefixes)}
        for scope in wanted:
            out[scope] = _merged([per_prefix[p] for p in disjoint(scope) or ("",)])
        return out
    for start in range(0, len(wanted), SCOPE_COLUMNS):
        chunk = wanted[start : start + SCOPE_COLUMNS]
        columns = [
            func.count() if not scope else func.sum(case((_scope_condition(scope), 1), else_=0))
            for scope in chunk
        ]
        result = await session.stream(
            select(OriginFileRow.changed_at, *columns)
            .group_by(OriginFileRow.changed_at)
            .order_by(OriginFileRow.changed_at)
        )
        found = [(array("d"), array("q")) for _ in chunk]
        async for rows in result.partitions(ROWS_PER_FETCH):
            for row in rows:
                for (times, counts), n in zip(found, row[1:], strict=True):
                    if n:
                        times.append(row[0])
                        counts.append(n)
        for scope, (times, counts) in zip(chunk, found, strict=True):
            out[scope] = Histogram.from_sorted(times, counts)
    return out


async def load_differing(session: AsyncSession, mirrors: Sequence[MirrorFacts]) -> dict[int, int]:
    """In-scope diffs per mirror on files not changed after the mirror's last good scan."""
    by_scope: dict[tuple[str, ...], list[int]] = {}
    for m in mirrors:
        if m.last_good_scan is not None:
            by_scope.setdefault(m.scope, []).append(m.id)
    out: dict[int, int] = {m.id: 0 for m in mirrors}
    for scope, ids in by_scope.items():
        query = (
            select(MirrorFileDiffRow.mirror_id, func.count())
            .join(OriginFileRow, OriginFileRow.id == MirrorFileDiffRow.file_id)
            .join(MirrorStateRow, MirrorStateRow.mirror_id == MirrorFileDiffRow.mirror_id)
            .where(
                MirrorFileDiffRow.mirror_id.in_(ids),
                OriginFileRow.changed_at <= MirrorStateRow.last_good_scan,
            )
            .group_by(MirrorFileDiffRow.mirror_id)
        )
        if scope:
            query = query.where(_scope_condition(scope))
        for mirror_id, n in await session.execute(query):
            out[int(mirror_id)] = int(n)
    return out


async def load_confirmations(session: AsyncSession) -> list[Confirmation]:
    """Re-checks that saw the current version (the table holds only recent changes)."""
    diff = MirrorFileDiffRow
    rows = await session.execute(
        select(
            MirrorFileConfirmationRow.mirror_id,
            OriginFileRow.path,
            OriginFileRow.changed_at,
            diff.file_id.is_not(None),
        )
        .join(OriginFileRow, OriginFileRow.id == MirrorFileConfirmationRow.file_id)
        .outerjoin(
            diff,
            and_(
                diff.mirror_id == MirrorFileConfirmationRow.mirror_id,
                diff.file_id == MirrorFileConfirmationRow.file_id,
            ),
        )
        .where(MirrorFileConfirmationRow.checked_at >= OriginFileRow.changed_at)
    )
    return [Confirmation(int(m), p, float(c), bool(d)) for m, p, c, d in rows]


def _hour_expression(dialect: str) -> ColumnElement[int]:
    at = ProbeResultRow.at
    if dialect == "sqlite":
        # Stored as "YYYY-MM-DD HH:MM:SS[.ffffff]" in UTC.
        return cast(cast(func.strftime("%s", at), Integer) / HOUR, Integer)
    return cast(func.floor(func.extract("epoch", at) / HOUR), Integer)


async def load_probe_buckets(
    session: AsyncSession, mirror_ids: Sequence[int], since_hour: int, after_id: int = 0
) -> tuple[Buckets, int]:
    """(good samples, samples) per mirror and hour from hour ``since_hour`` on, counting only
    rows with an id above ``after_id``; and the highest id seen.

    Probe rows are appended (retention merges only rows older than the 24 h window), so the
    ids say what is new. The first read sums in SQL, walking the (mirror_id, at) index; later
    reads fetch the few new rows by primary key and sum here (with a GROUP BY, SQLite would
    walk the whole index again to avoid sorting).
    """
    wanted = set(mirror_ids)
    out: Buckets = {}
    last = after_id
    if after_id:
        rows = await session.execute(
            select(
                ProbeResultRow.id,
                ProbeResultRow.mirror_id,
                ProbeResultRow.at,
                ProbeResultRow.ok,
                ProbeResultRow.samples,
            ).where(ProbeResultRow.id > after_id)
        )
        for row_id, mirror_id, at, ok, samples in rows:
            last = max(last, int(row_id))
            h = int((_seconds(at) or 0.0) // HOUR)
            if mirror_id in wanted and h >= since_hour:
                hours = out.setdefault(int(mirror_id), {})
                g, n = hours.get(h, (0, 0))
                hours[h] = (g + (samples if ok else 0), n + samples)
        return out, last
    # The newest id first, and only rows up to it: a row committed meanwhile is read next time.
    top_id = int(await session.scalar(select(func.max(ProbeResultRow.id))) or 0)
    dialect = session.get_bind().dialect.name
    hour = _hour_expression(dialect).label("hour")
    good = func.sum(case((ProbeResultRow.ok, ProbeResultRow.samples), else_=0))
    grouped = await session.execute(
        select(
            ProbeResultRow.mirror_id,
            hour,
            good,
            func.sum(ProbeResultRow.samples),
            func.max(ProbeResultRow.id),
        )
        .where(
            ProbeResultRow.mirror_id.in_(mirror_ids),
            ProbeResultRow.at >= datetime.fromtimestamp(since_hour * HOUR, UTC),
            ProbeResultRow.id <= top_id,
        )
        .group_by(ProbeResultRow.mirror_id, hour)
    )
    for mirror_id, h, g, n, _top in grouped:
        out.setdefault(int(mirror_id), {})[int(h)] = (int(g or 0), int(n or 0))
    return out, top_id


@dataclass
class StatusSource:
    """Builds :class:`StatusModel` from the database, reusing what cannot have changed.

    - Origin histograms: reloaded when :func:`origin_signature` moves (the origin changed).
    - Confirmations: a small table (only files changed since a mirror's last scan), read
      every time.
    - Diff counts, per mirror: a mirror's diffs change only with a good scan of it, which
      moves its ``last_good_scan``; so a count is reloaded only when that, its scope or the
      origin histogram changed. With 500 mirrors scanned every 30 min the version moves every
      few seconds, but each move re-counts one mirror's diffs, not everyone's.
    - Probe buckets: kept; later builds add the probe rows written since (by id), and the
      window is read in full once an hour.
    """

    sessions: async_sessionmaker[AsyncSession]
    clock: Callable[[], float] = time.time
    _origin: OriginSignature | None = None
    _histograms: dict[tuple[str, ...], Histogram] = field(default_factory=dict)
    _confirmations: list[Confirmation] = field(default_factory=list)
    _differing: dict[int, tuple[DiffKey, int]] = field(default_factory=dict)
    _buckets: Buckets = field(default_factory=dict)
    _last_id: int = 0  # the highest probe_results id counted into _buckets
    _full_read_hour: int | None = None
    _seen: set[int] = field(default_factory=set)  # mirrors whose buckets are loaded

    async def build(self) -> StatusModel:
        now = self.clock()
        async with self.sessions() as session:
            mirrors = await load_mirrors(session)
            enabled = [m for m in mirrors if m.enabled]
            scopes = {m.scope for m in enabled} | {()}
            origin = await origin_signature(session)
            if origin != self._origin or not scopes <= self._histograms.keys():
                self._histograms = await load_histograms(session, scopes)
                self._origin = origin
                release_free_heap_later(0.0)  # the rows read: ~100 MB at 1,000,000 files
            self._confirmations = await load_confirmations(session)
            keys = {m.id: (m.last_good_scan, m.scope, origin) for m in enabled}
            todo = [m for m in enabled if self._differing.get(m.id, (None, 0))[0] != keys[m.id]]
            if todo:
                counts = await load_differing(session, todo)
                for m in todo:
                    self._differing[m.id] = (keys[m.id], counts[m.id])
            await self._refresh_buckets(session, [m.id for m in enabled], now)
        inputs = CoverageInputs(
            histograms=self._histograms,
            differing={i: n for i, (_, n) in self._differing.items()},
            confirmations=self._confirmations,
        )
        return build_status(mirrors, inputs, self._buckets, now)

    async def _refresh_buckets(
        self, session: AsyncSession, mirror_ids: Sequence[int], now: float
    ) -> None:
        current = int(now // HOUR)
        first = current - WINDOW_HOURS + 1
        new = [i for i in mirror_ids if i not in self._seen]
        # A full read once an hour also picks up rows that committed out of id order.
        if self._last_id and not new and self._full_read_hour == current:
            # Only rows written since the last read, added to their hours.
            fresh, self._last_id = await load_probe_buckets(
                session, mirror_ids, first, self._last_id
            )
            for mirror_id, hours in fresh.items():
                mine = self._buckets.setdefault(mirror_id, {})
                for h, (g, n) in hours.items():
                    g0, n0 = mine.get(h, (0, 0))
                    mine[h] = (g0 + g, n0 + n)
        else:
            # First read, a new hour, or a mirror added or re-enabled: the whole window.
            self._buckets, self._last_id = await load_probe_buckets(session, mirror_ids, first)
            self._full_read_hour = current
        self._seen = set(mirror_ids)
        for hours in self._buckets.values():
            for h in [h for h in hours if h < first]:
                del hours[h]


__all__ = ["StatusSource", "load_mirrors", "load_probe_buckets"]
