"""Targeted re-checks: after the origin changes files, ask each mirror about just those files.

A mirror's last full scan predates the change, so the dispatcher treats the changed files as
stale on it. A HEAD per changed file (Content-Length and Last-Modified against the origin's
size and mtime) brings mirrors that already hold the new version back within seconds instead
of at the next full scan. The work is bounded: at most ``recheck_max_files`` files per mirror
per round, ``recheck_concurrency`` requests per mirror at once.

A confirmation's ``checked_at`` is the clock reading taken **before** the query that loads the
files' size and mtime, not after the HEAD requests. A confirmation counts for every version
whose ``changed_at`` is not later than ``checked_at``, so it must not be later than any version
it did not compare. The origin scan stamps a version only after committing it (see
:mod:`mirrorhub.workers.origin_scan`): a version the query missed committed after the query
began, hence after this clock reading, and its stamp is later still; the mirror stays stale
for it. Read after the HEADs, the time could follow such a stamp and count the mirror fresh
for a version it was never compared with. (As everywhere, workers' clocks must agree.)
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
from sqlalchemy import and_, delete, exists, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import (
    MirrorFileConfirmationRow,
    MirrorRow,
    MirrorStateRow,
    OriginFileRow,
)
from mirrorhub.db.repositories import bump_version
from mirrorhub.paths import name_matcher, quote_path
from mirrorhub.settings import Settings
from mirrorhub.workers.netpolicy import GuardedTransport, NetPolicyError

Sessions = async_sessionmaker[AsyncSession]


@dataclass(frozen=True, slots=True)
class StaleFile:
    id: int
    path: str
    size: int
    mtime: int


@dataclass(frozen=True, slots=True)
class RecheckReport:
    mirrors: int
    checked: int
    confirmed: int


def matches_origin(file: StaleFile, headers: httpx.Headers) -> bool:
    """A HEAD answer shows the origin's version: same length and same mtime to the second."""
    length = headers.get("content-length")
    modified = headers.get("last-modified")
    if length is None or modified is None or not length.isdigit():
        return False
    try:
        stamp = int(parsedate_to_datetime(modified).timestamp())
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    return int(length) == file.size and stamp == file.mtime


async def stale_files(
    session: AsyncSession,
    mirror_id: int,
    since: float,
    until: float,
    scope: Sequence[str],
    limit: int,
) -> list[StaleFile]:
    """Files changed after the mirror's last good scan and not confirmed since, newest first.

    Only files stamped at or before ``until`` (the round's ``checked_at``): a confirmation at
    ``until`` could not count for a later ``changed_at``. That leaves out rows at
    CHANGE_PENDING, committed by the origin scan but not stamped yet: they would otherwise sort
    first and crowd real work out of ``limit``, and the stamp follows within moments, after
    which the next round picks them up.
    """
    confirmed = exists().where(
        and_(
            MirrorFileConfirmationRow.mirror_id == mirror_id,
            MirrorFileConfirmationRow.file_id == OriginFileRow.id,
            MirrorFileConfirmationRow.checked_at >= OriginFileRow.changed_at,
        )
    )
    query = (
        select(OriginFileRow.id, OriginFileRow.path, OriginFileRow.size, OriginFileRow.mtime)
        .where(OriginFileRow.changed_at > since, OriginFileRow.changed_at <= until, ~confirmed)
        .order_by(OriginFileRow.changed_at.desc())
        .limit(limit * 4)
    )
    rows = (await session.execute(query)).all()
    out = [StaleFile(*row) for row in rows if not scope or row[1].startswith(tuple(scope))]
    return out[:limit]


async def recheck_all(
    sessions: Sessions,
    settings: Settings,
    *,
    clock: Callable[[], float] = time.time,
    transport: httpx.AsyncBaseTransport | None = None,
) -> RecheckReport:
    """One round of targeted re-checks over every enabled, scanned mirror."""
    # Before reading any file's facts, never after the HEADs: see the module docstring.
    now = clock()
    async with sessions() as session:
        mirrors = (
            await session.execute(
                select(MirrorRow, MirrorStateRow.last_good_scan)
                .join(MirrorStateRow, MirrorStateRow.mirror_id == MirrorRow.id)
                .where(MirrorRow.enabled.is_(True), MirrorStateRow.last_good_scan.is_not(None))
            )
        ).all()
        work: list[tuple[int, str, list[StaleFile]]] = []
        skip = name_matcher(settings.origin_only_patterns)
        for mirror, last_scan in mirrors:
            base = mirror.http_url or mirror.https_url
            if base is None or last_scan is None:
                continue
            scope = mirror.scope.split()
            files = await stale_files(
                session, mirror.id, last_scan, now, scope, settings.recheck_max_files
            )
            files = [
                f
                for f in files
                if f.size >= settings.min_redirect_size
                and not (skip and skip(f.path.rsplit("/", 1)[-1]))
            ]
            if files:
                work.append((mirror.id, base, files))
    if not work:
        return RecheckReport(len(mirrors), 0, 0)
    transport = transport or GuardedTransport(settings.allow_private_mirrors)
    timeout = httpx.Timeout(settings.recheck_timeout_seconds)
    async with httpx.AsyncClient(
        transport=transport, timeout=timeout, follow_redirects=False, trust_env=False
    ) as client:
        results = await asyncio.gather(
            *(_check_mirror(client, base, files, settings) for _, base, files in work)
        )
    rows = [
        {"mirror_id": mirror_id, "file_id": f.id, "checked_at": now}
        for (mirror_id, _, _), confirmed in zip(work, results, strict=True)
        for f in confirmed
    ]
    if rows:
        await _store(sessions, rows)
    return RecheckReport(len(mirrors), sum(len(f) for _, _, f in work), len(rows))


async def _check_mirror(
    client: httpx.AsyncClient, base: str, files: list[StaleFile], settings: Settings
) -> list[StaleFile]:
    limit = asyncio.Semaphore(settings.recheck_concurrency)

    async def one(file: StaleFile) -> bool:
        async with limit:
            try:
                response = await client.head(base + quote_path(file.path))
            except (httpx.HTTPError, OSError, ValueError, NetPolicyError):
                return False
            return response.status_code == 200 and matches_origin(file, response.headers)

    oks = await asyncio.gather(*(one(f) for f in files))
    return [f for f, ok in zip(files, oks, strict=True) if ok]


async def _store(sessions: Sessions, rows: list[dict[str, float]]) -> None:
    async with sessions.begin() as session:
        # Replace older confirmations of the same pairs, then insert the new ones.
        for row in rows:
            await session.execute(
                delete(MirrorFileConfirmationRow).where(
                    MirrorFileConfirmationRow.mirror_id == row["mirror_id"],
                    MirrorFileConfirmationRow.file_id == row["file_id"],
                )
            )
        await session.execute(insert(MirrorFileConfirmationRow), rows)
        await bump_version(session, files={int(row["file_id"]) for row in rows})
