"""Job rows and leases in the ``jobs`` table, shared by every worker process.

A claim is one conditional UPDATE (``WHERE lease_until < now AND next_run <= now``): on
SQLite and PostgreSQL alike exactly one worker's UPDATE matches, so no job runs twice at
once, and a worker that dies simply lets its lease run out.

A request to run a job soon (:func:`run_soon`: the origin watch after the trace file
changed, a re-check after the origin changed) that arrives while the job runs is kept: a
claimed row's ``next_run`` is never later than its ``last_started``, the request sets it
past that, and :func:`finish` keeps such a time when it is earlier than the one it computed.
So the job runs again straight after, instead of waiting a whole interval with changes its
run may have missed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, case, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import JobRow

Sessions = async_sessionmaker[AsyncSession]
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JobInfo:
    key: str
    next_run: float
    lease_owner: str
    lease_until: float
    failures: int
    last_started: float | None
    last_finished: float | None
    last_error: str


async def sync_jobs(sessions: Sessions, keys: Iterable[str], prefixes: Iterable[str]) -> None:
    """Make the job rows under ``prefixes`` exactly ``keys``: add new ones, drop stale ones."""
    wanted = set(keys)
    prefix_tuple = tuple(prefixes)
    async with sessions.begin() as session:
        existing = set((await session.execute(select(JobRow.key))).scalars())
        mine = {k for k in existing if k.startswith(prefix_tuple)}
        gone = mine - wanted
        if gone:
            await session.execute(delete(JobRow).where(JobRow.key.in_(gone)))
        new = wanted - existing
        if new:
            await session.execute(insert(JobRow), [_new_row(k) for k in sorted(new)])


def _new_row(key: str) -> dict[str, object]:
    """A job row as it starts: due at once, no lease, no failures."""
    return {"key": key, "next_run": 0.0, "lease_owner": "", "lease_until": 0.0, "failures": 0,
            "last_error": ""}  # fmt: skip


def _handled(kinds: Sequence[str]) -> ColumnElement[bool]:
    """Keys a worker can run: exact names, or ``prefix:`` families such as ``scan:``."""
    exact = [k for k in kinds if not k.endswith(":")]
    families = [JobRow.key.startswith(k) for k in kinds if k.endswith(":")]
    return or_(JobRow.key.in_(exact), *families)


async def claim_due(
    sessions: Sessions,
    owner: str,
    now: float,
    lease_seconds: float,
    limit: int,
    kinds: Sequence[str] | None = None,
) -> list[JobInfo]:
    """Claim up to ``limit`` due jobs for ``owner``, oldest due first.

    ``kinds`` limits the claim to jobs this worker has handlers for (None: any job).
    """
    if limit <= 0:
        return []
    claimed: list[JobInfo] = []
    condition = [JobRow.next_run <= now, JobRow.lease_until < now]
    if kinds is not None:
        condition.append(_handled(kinds))
    async with sessions() as session:
        due = (
            await session.execute(
                select(JobRow.key)
                .where(*condition)
                .order_by(JobRow.next_run)
                .limit(limit * 4)
            )
        ).scalars().all()  # fmt: skip
        for key in due:
            if len(claimed) >= limit:
                break
            job = await _take(session, key, owner, now, lease_seconds, JobRow.next_run <= now)
            if job is not None:
                claimed.append(job)
    return claimed


async def _take(
    session: AsyncSession,
    key: str,
    owner: str,
    now: float,
    lease_seconds: float,
    *conditions: ColumnElement[bool],
) -> JobInfo | None:
    """The claim itself: one conditional UPDATE, committed; None when another process holds
    an unexpired lease (or ``conditions`` do not hold). A job claimed before it was due
    (:func:`claim`) is made due now, so that ``next_run > last_started`` means a request
    during the run (see the module docstring)."""
    result = await session.execute(
        update(JobRow)
        .where(JobRow.key == key, JobRow.lease_until < now, *conditions)
        .values(
            lease_owner=owner,
            lease_until=now + lease_seconds,
            last_started=now,
            next_run=case((JobRow.next_run > now, now), else_=JobRow.next_run),
        )
    )
    await session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return None
    row = await session.get(JobRow, key, populate_existing=True)
    return _info(row) if row is not None else None


async def claim(
    sessions: Sessions, key: str, owner: str, now: float, lease_seconds: float
) -> JobInfo | None:
    """Take the lease on ``key`` for ``owner`` now, due or not (``mirrorhub scan-origin``).

    The same conditional UPDATE as :func:`claim_due` without the ``next_run`` condition: an
    unexpired lease held by anyone (``owner`` included) is never taken, so None means
    someone holds it. A missing row is created first (due at once, as :func:`sync_jobs`
    would create it), so a process that runs a job before any worker has synced still
    keeps workers from running it at the same time.
    """
    try:
        async with sessions.begin() as session:
            if await session.get(JobRow, key) is None:
                await session.execute(insert(JobRow).values(**_new_row(key)))
    except IntegrityError:  # another process created it meanwhile: claim below as usual
        pass
    async with sessions() as session:
        return await _take(session, key, owner, now, lease_seconds)


async def get_job(sessions: Sessions, key: str) -> JobInfo | None:
    async with sessions() as session:
        row = await session.get(JobRow, key)
        return _info(row) if row is not None else None


async def renew(sessions: Sessions, key: str, owner: str, until: float) -> bool:
    """Extend a lease we still hold; False means another worker took the job over."""
    async with sessions.begin() as session:
        result = await session.execute(
            update(JobRow)
            .where(JobRow.key == key, JobRow.lease_owner == owner)
            .values(lease_until=until)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


async def keep_lease(
    sessions: Sessions, key: str, owner: str, lease_seconds: float, clock: Callable[[], float]
) -> None:
    """Renew ``owner``'s lease on ``key`` every third of its length until cancelled, or until
    it turns out lost (it ran out and another process may have taken the job)."""
    while True:
        await asyncio.sleep(lease_seconds / 3)
        try:
            held = await renew(sessions, key, owner, clock() + lease_seconds)
        except Exception as exc:  # database away: keep trying, or the lease lapses for good
            log.warning("cannot renew the lease on %s: %s", key, exc)
            continue
        if not held:
            log.warning("lost the lease on %s: another process may run it alongside", key)
            return


async def finish(
    sessions: Sessions,
    key: str,
    owner: str,
    now: float,
    *,
    ok: bool,
    error: str,
    next_run: float,
    failures: int,
) -> None:
    requested = and_(JobRow.next_run > JobRow.last_started, JobRow.next_run < next_run)
    async with sessions.begin() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.key == key, JobRow.lease_owner == owner)
            .values(
                lease_owner="",
                lease_until=0.0,
                # a run_soon that came while it ran, when sooner than the computed time
                next_run=case((requested, JobRow.next_run), else_=next_run),
                failures=0 if ok else failures,
                last_finished=now,
                last_error="" if ok else error[:2000],
            )
        )


async def run_soon(sessions: Sessions, key: str, at: float) -> None:
    """Bring a job's next run forward (e.g. re-checks right after an origin change); if it
    is running now, have it run again as soon as it finishes (see the module docstring)."""
    running = and_(JobRow.lease_until >= at, JobRow.next_run <= JobRow.last_started)
    async with sessions.begin() as session:
        await session.execute(
            update(JobRow)
            .where(JobRow.key == key, or_(JobRow.next_run > at, running))
            # past the run's start even if this clock is behind the runner's
            .values(
                next_run=case(
                    (and_(running, JobRow.last_started >= at), JobRow.last_started + 0.001),
                    else_=at,
                )
            )
        )


async def list_jobs(sessions: Sessions) -> list[JobInfo]:
    async with sessions() as session:
        rows = (await session.execute(select(JobRow).order_by(JobRow.key))).scalars().all()
        return [_info(r) for r in rows]


def _info(row: JobRow) -> JobInfo:
    return JobInfo(
        row.key,
        row.next_run,
        row.lease_owner,
        row.lease_until,
        row.failures,
        row.last_started,
        row.last_finished,
        row.last_error,
    )
