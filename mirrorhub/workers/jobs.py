"""The background jobs and how often they run, wired to the runner.

=================  =========================  =============================================
job key            default interval           what it does
=================  =========================  =============================================
``origin-scan``    ``origin_scan_interval``   walk the origin tree (only where it is visible)
``origin-watch``   ``origin_watch_seconds``   stat the trace file; a change starts the
                                              origin scan at once
``scan:<id>``      ``scan_interval``          full scan of one mirror (rsync or HTTP)
``probe``          ``probe_interval``         health + trace probe of every enabled mirror
``recheck``        ``recheck_interval``       HEAD files changed since each mirror's scan
``retention``      one hour                   bound probe history and download stats
=================  =========================  =============================================

Failing jobs back off exponentially (see :mod:`mirrorhub.workers.schedule`).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select

from mirrorhub.db.models import JobRow, MirrorRow, MirrorStateRow
from mirrorhub.errors import MirrorhubError
from mirrorhub.settings import Settings
from mirrorhub.workers import leases
from mirrorhub.workers.runner import JobKind, JobOutcome, Runner
from mirrorhub.workers.schedule import Backoff


@dataclass
class Jobs:
    """Job handlers bound to one worker's settings, database and clock."""

    sessions: leases.Sessions
    settings: Settings
    clock: Callable[[], float] = time.time
    _trace_seen: tuple[int, int] | None = field(default=None, init=False)

    @property
    def has_origin(self) -> bool:
        return self.settings.origin_dir is not None

    def kinds(self) -> list[JobKind]:
        s = self.settings
        kinds = [
            JobKind("scan:", s.scan_interval, Backoff(60.0, s.scan_interval), self.scan, True),
            JobKind("probe", s.probe_interval, Backoff(s.probe_interval, 60.0), self.probe),
            JobKind("recheck", s.recheck_interval, Backoff(30.0, 600.0), self.recheck),
            JobKind("retention", 3600.0, Backoff(600.0, 3600.0), self.retention),
        ]
        if self.has_origin:
            kinds += [
                JobKind(
                    "origin-scan", s.origin_scan_interval, Backoff(30.0, 600.0), self.origin_scan
                ),
                JobKind(
                    "origin-watch", s.origin_watch_seconds, Backoff(30.0, 300.0), self.origin_watch
                ),
            ]
        return kinds

    async def wanted_keys(self) -> list[str]:
        async with self.sessions() as session:
            ids = (
                await session.execute(select(MirrorRow.id).where(MirrorRow.enabled.is_(True)))
            ).scalars()
            keys = [f"scan:{i}" for i in ids]
        keys += ["probe", "recheck", "retention"]
        if self.has_origin:
            keys += ["origin-scan", "origin-watch"]
        return keys

    async def origin_scan(self, key: str) -> JobOutcome:
        from mirrorhub.workers.origin_scan import scan_origin

        assert self.settings.origin_dir is not None
        try:
            result = await scan_origin(self.sessions, self.settings.origin_dir, clock=self.clock)
        except MirrorhubError as exc:
            return JobOutcome(False, str(exc))
        return JobOutcome(True, run_soon=("recheck",) if result.any_change else ())

    async def origin_watch(self, key: str) -> JobOutcome:
        """Start the origin scan as soon as the publisher rewrites the trace file."""
        trace = self.settings.trace_file
        if self.settings.origin_dir is None or not trace:
            return JobOutcome(True)
        try:
            st = os.stat(Path(self.settings.origin_dir) / trace)
        except OSError:
            return JobOutcome(True)
        seen = (st.st_mtime_ns, st.st_size)
        changed = self._trace_seen is not None and seen != self._trace_seen
        self._trace_seen = seen
        return JobOutcome(True, run_soon=("origin-scan",) if changed else ())

    async def scan(self, key: str) -> JobOutcome:
        from mirrorhub.db.repositories import row_to_mirror
        from mirrorhub.workers.mirror_scan import scan_mirror

        async with self.sessions() as session:
            origin_job = await session.get(JobRow, "origin-scan")
            if origin_job is not None and origin_job.last_finished is None:
                # Comparing against an origin not scanned yet would mark every file stale.
                return JobOutcome(True, "waiting for the first origin scan", retry_after=2.0)
            row = await session.get(MirrorRow, int(key.split(":", 1)[1]))
            mirror = row_to_mirror(row) if row is not None else None
            state = await session.get(MirrorStateRow, row.id) if row is not None else None
        if state is not None and state.health == "down":
            # A full scan of a dead mirror would only hold a slot until it times out; the
            # probes notice its return, and the scan runs again soon after.
            return JobOutcome(
                True, "skipped: mirror is down", retry_after=min(self.settings.scan_interval, 300.0)
            )
        if mirror is None:  # removed since the job list was synced
            return JobOutcome(True)
        report = await scan_mirror(self.sessions, self.settings, mirror, clock=self.clock)
        return JobOutcome(report.ok, report.error)

    async def probe(self, key: str) -> JobOutcome:
        from mirrorhub.workers.probe import probe_mirrors

        await probe_mirrors(self.sessions, self.settings, clock=self.clock)
        return JobOutcome(True)

    async def recheck(self, key: str) -> JobOutcome:
        from mirrorhub.workers.recheck import recheck_all

        await recheck_all(self.sessions, self.settings, clock=self.clock)
        return JobOutcome(True)

    async def retention(self, key: str) -> JobOutcome:
        from mirrorhub.stats.retention import apply_stats_retention
        from mirrorhub.workers.retention import apply_retention

        await apply_retention(self.sessions, self.settings, clock=self.clock)
        await apply_stats_retention(self.sessions, self.settings, clock=self.clock)
        return JobOutcome(True)


def default_owner() -> str:
    import socket

    return f"{socket.gethostname()}:{os.getpid()}"


async def run_workers(
    sessions: leases.Sessions,
    settings: Settings,
    stop: asyncio.Event,
    *,
    owner: str | None = None,
    clock: Callable[[], float] = time.time,
) -> None:
    """Run every background job until ``stop`` is set (``mirrorhub worker`` and ``serve``)."""
    from mirrorhub.fleet import Heartbeat

    jobs = Jobs(sessions, settings, clock)
    owner = owner or default_owner()
    runner = Runner(
        sessions,
        jobs.kinds(),
        jobs.wanted_keys,
        owner=owner,
        concurrency=settings.worker_concurrency,
        lease_seconds=settings.job_lease_seconds,
        clock=clock,
    )
    # The row in `processes` (named like the lease owner) lists this worker on /-/workers.
    heartbeat = Heartbeat(sessions, owner, "worker", settings.heartbeat_seconds, clock=clock)
    heartbeat.start()
    try:
        await runner.run(stop)
    finally:
        await heartbeat.stop()
