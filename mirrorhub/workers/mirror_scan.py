"""Scan one mirror: pick the method, list the mirror, compare with the origin, apply.

rsync when the mirror has an ``rsync_url`` (exact sizes, mtimes to the second), else its HTTPS
base URL, else its HTTP base URL (directory listings: rounded sizes, minutes, maybe local time;
a whole-hour offset is detected before comparing).

Any :class:`ScanFailed` on the way (listing, time-zone detection, compare) is recorded as a
failed scan and keeps the last good data (see :mod:`scan_apply`); the report says why. Errors
writing the result itself propagate.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db import repositories as repo
from mirrorhub.db.models import OriginFileRow
from mirrorhub.domain import Mirror
from mirrorhub.errors import NotFound, ScanFailed
from mirrorhub.settings import Settings
from mirrorhub.workers import http_scan, reconcile, rsync_scan
from mirrorhub.workers.scan_apply import DiffRow, ScanRecord, apply_scan
from mirrorhub.workers.seen import SeenFile

Method = Literal["rsync", "http"]
Sessions = async_sessionmaker[AsyncSession]
OriginRow = tuple[int, str, int, int]  # (id, path, size, mtime)
STREAM_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class ScanReport:
    mirror: str
    method: Method
    ok: bool
    started_at: float  # POSIX seconds
    duration: float  # seconds
    files_seen: int = 0
    matching: int = 0
    missing: int = 0
    outdated: int = 0
    extra: int = 0
    tz_offset: int = 0
    error: str = ""
    scan_failures: int = 0  # consecutive, after this scan
    scan_failed: bool = False  # excluded from selection after this scan


def scan_method(mirror: Mirror) -> tuple[Method, str]:
    """The method and URL a scan of ``mirror`` uses (pure)."""
    if mirror.rsync_url:
        return "rsync", mirror.rsync_url
    url = mirror.https_url or mirror.http_url
    if not url:
        raise ScanFailed(f"mirror {mirror.name} has no rsync, HTTPS or HTTP URL")
    return "http", url


async def load_origin(sessions: Sessions) -> list[OriginRow]:
    """``(id, path, size, mtime)`` of every origin file, streamed in batches."""
    out: list[OriginRow] = []
    query = select(
        OriginFileRow.id, OriginFileRow.path, OriginFileRow.size, OriginFileRow.mtime
    ).execution_options(yield_per=STREAM_BATCH)
    async with sessions() as session:
        conn = await session.connection()
        async for batch in (await conn.stream(query)).partitions():
            out.extend((i, p, s, m) for i, p, s, m in batch)
    return out


async def _load_mirror(sessions: Sessions, name: str) -> Mirror:
    async with sessions() as session:
        record = await repo.get_mirror(session, name.strip().lower())
    if record is None:
        raise NotFound(f"no mirror named {name!r}")
    return record.mirror


async def list_mirror(
    mirror: Mirror, method: Method, url: str, settings: Settings
) -> tuple[list[SeenFile], int]:
    """The files the mirror shows and the listing's mtime precision (seconds)."""
    if method == "rsync":
        result = await rsync_scan.list_rsync(
            url,
            scope=mirror.scope,
            allow_private=settings.allow_private_mirrors,
            io_timeout=settings.scan_request_timeout_seconds,
            total_timeout=settings.scan_timeout_seconds,
            max_entries=settings.scan_max_entries,
        )
        return result.files, 1
    limits = http_scan.CrawlLimits(
        concurrency=settings.http_scan_concurrency,
        request_timeout=settings.scan_request_timeout_seconds,
        total_timeout=settings.scan_timeout_seconds,
        max_pages=settings.scan_max_pages,
        max_entries=settings.scan_max_entries,
    )
    crawled = await http_scan.crawl(
        url,
        scope=mirror.scope,
        allow_private=settings.allow_private_mirrors,
        limits=limits,
    )
    return crawled.files, crawled.mtime_precision


def compare(
    origin: Sequence[OriginRow],
    seen: Sequence[SeenFile],
    scope: Sequence[str],
    method: Method,
) -> tuple[reconcile.ScanResult, int]:
    """Detect the listing's time-zone offset (HTTP only), then compare: (result, offset)."""
    seen_map = {f.path: f for f in seen}
    if method == "http":
        result = reconcile.compare_detecting_tz(origin, seen_map, scope)
    else:
        result = reconcile.compare(origin, seen_map, scope)
    return result, result.tz_offset


async def scan_mirror(
    sessions: Sessions,
    settings: Settings,
    mirror: str | Mirror,
    *,
    clock: Callable[[], float] = time.time,
) -> ScanReport:
    """Scan one mirror and record the outcome; a failed scan is a report with ``ok=False``.

    Raises NotFound for an unknown mirror name, ScanFailed when the database fails.
    """
    if isinstance(mirror, str):
        mirror = await _load_mirror(sessions, mirror)
    started = clock()
    t0 = time.monotonic()
    method: Method = "rsync" if mirror.rsync_url else "http"
    diffs: list[DiffRow] = []
    try:
        method, url = scan_method(mirror)
        try:
            origin = await load_origin(sessions)
        except SQLAlchemyError as exc:
            raise ScanFailed(f"cannot read the origin files: {exc}") from exc
        seen, _precision = await list_mirror(mirror, method, url, settings)
        result, offset = compare(origin, seen, mirror.scope, method)
        del origin, seen
        diffs = [DiffRow(d.file_id, d.kind, d.seen_size, d.seen_mtime) for d in result.diffs]
        record = ScanRecord(
            mirror.id,
            method,
            started,
            time.monotonic() - t0,
            True,
            files_seen=result.files_seen,
            files_matching=result.files_matching,
            missing=result.missing,
            outdated=result.outdated,
            extra=result.extra,
            tz_offset=offset,
        )
    except ScanFailed as exc:
        record = ScanRecord(
            mirror.id, method, started, time.monotonic() - t0, False, error=str(exc) or "failed"
        )
    applied = await apply_scan(
        sessions,
        record,
        diffs,
        failures_before_exclusion=settings.scan_failures_before_exclusion,
    )
    return ScanReport(
        mirror=mirror.name,
        method=record.method,
        ok=record.ok,
        started_at=started,
        duration=time.monotonic() - t0,
        files_seen=record.files_seen,
        matching=record.files_matching,
        missing=record.missing,
        outdated=record.outdated,
        extra=record.extra,
        tz_offset=record.tz_offset,
        error=record.error,
        scan_failures=applied.scan_failures,
        scan_failed=applied.scan_failed,
    )
