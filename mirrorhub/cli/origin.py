"""``mirrorhub scan-origin``: bring the database in line with the origin tree.

The command holds the workers' ``origin-scan`` job lease while it scans (see :func:`_run`), so
a cron-driven scan and a worker's never hash the same tree at once. While another process
holds the lease it waits up to ``--wait`` seconds, then exits with :data:`BUSY_EXIT`. After a
scan that changed something it brings the workers' re-check forward, as a worker's does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import random
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy.exc import SQLAlchemyError

from mirrorhub.errors import MirrorhubError, ScanFailed, SettingsError
from mirrorhub.settings import Settings, env_name
from mirrorhub.workers import leases
from mirrorhub.workers.origin_scan import OriginScanResult, ScanProgress, scan_origin
from mirrorhub.workers.schedule import next_run

JOB_KEY = "origin-scan"  # the workers' job: one origin scan at a time, CLI or worker
RECHECK_KEY = "recheck"  # the workers' re-check job, brought forward after a change
BUSY_EXIT = 75  # EX_TEMPFAIL (sysexits.h): another scan holds the lease; try again later
DEFAULT_WAIT = 600.0
POLL_SECONDS = 1.0


class LeaseBusy(Exception):
    """Another process held the origin-scan lease for the whole wait."""

    def __init__(self, holder: leases.JobInfo | None, waited: float) -> None:
        super().__init__(holder, waited)
        self.holder = holder
        self.waited = waited

    def __str__(self) -> str:
        who = "another process"
        if self.holder is not None and self.holder.lease_owner:
            until = time.strftime("%H:%M:%S", time.localtime(self.holder.lease_until))
            who = f"{self.holder.lease_owner} (lease until {until}, renewed while it runs)"
        return (
            f"an origin scan is already running: {who}; gave up after waiting "
            f"{self.waited:.0f} s (--wait SECONDS waits longer)"
        )


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "scan-origin",
        help="scan the origin tree and record new, changed and deleted files",
        description="Walk MIRRORHUB_ORIGIN_DIR, hash new and changed files (sha256) and "
        "update the database.",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept an empty origin directory (otherwise refused: it would unpublish "
        "every file, as an unmounted volume would)",
    )
    parser.add_argument(
        "--wait",
        type=_seconds,
        default=DEFAULT_WAIT,
        metavar="SECONDS",
        help="while another origin scan (a worker's or another scan-origin) holds the "
        f"origin-scan lease, wait up to SECONDS for it, then exit {BUSY_EXIT} "
        f"(default: {DEFAULT_WAIT:.0f}; 0: do not wait)",
    )
    parser.add_argument(
        "--workers", type=int, default=4, metavar="N", help="hashing threads (default: 4)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="name every entry that is not published"
    )
    parser.set_defaults(handler=_scan)


def _scan(args: argparse.Namespace, settings: Settings) -> int:
    if settings.origin_dir is None:
        raise SettingsError(env_name("origin_dir"), "not set (the directory tree to publish)")
    if not os.path.isdir(settings.origin_dir):  # before taking the lease for a scan that cannot run
        raise SettingsError(
            env_name("origin_dir"), f"{settings.origin_dir} does not exist or is not a directory"
        )
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        with _progress(sys.stdout.isatty()) as progress:
            result = asyncio.run(_run(settings, args, progress))
    except LeaseBusy as busy:
        print(f"mirrorhub: error: {busy}", file=sys.stderr)
        return BUSY_EXIT
    print(summary(result))
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"not a number of seconds >= 0: {text!r}")
    return value


def lease_owner() -> str:
    """Named like a worker's owner (``host:pid``), marked as this command on /-/workers."""
    return f"scan-origin@{socket.gethostname()}:{os.getpid()}"


async def _run(
    settings: Settings,
    args: argparse.Namespace,
    progress: Callable[[ScanProgress], None] | None,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> OriginScanResult:
    """Scan while holding the workers' ``origin-scan`` lease, as a worker would.

    Take the lease (waiting up to ``--wait`` seconds for its holder), renew it every third
    of ``job_lease_seconds`` while scanning, and release it at the end the way the runner
    does: ``last_finished`` set and ``next_run`` one interval ahead after success (so the
    workers do not rescan at once), a backoff after a failure, at once when interrupted.
    """
    from mirrorhub.db.session import create_engine, session_factory
    from mirrorhub.workers.jobs import Jobs

    assert settings.origin_dir is not None
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    owner = lease_owner()
    lease = settings.job_lease_seconds
    kind = next(k for k in Jobs(sessions, settings).kinds() if k.prefix == JOB_KEY)
    try:
        job = await _take_lease(sessions, owner, lease, args.wait, clock, sleep)
        heartbeat = asyncio.create_task(leases.keep_lease(sessions, JOB_KEY, owner, lease, clock))
        try:
            result = await scan_origin(
                sessions,
                settings.origin_dir,
                clock=clock,
                progress=progress,
                hash_workers=args.workers,
                allow_empty=args.allow_empty,
            )
        except BaseException as exc:
            await _stop(heartbeat)
            now = clock()
            if isinstance(exc, Exception):  # failed: back off as the runner would
                failures = job.failures + 1
                # worded as the worker's job records it
                error = (
                    str(exc) if isinstance(exc, MirrorhubError) else f"{type(exc).__name__}: {exc}"
                )
                when = next_run(now, kind.interval, failures, kind.backoff, random.Random())
            else:  # Ctrl-C, cancelled: nothing wrong with the tree, a worker may go on at once
                failures, error, when = job.failures, "scan-origin interrupted", now
            await _release(sessions, owner, lease, now, False, error, when, failures)
            raise
        await _stop(heartbeat)
        now = clock()
        when = next_run(now, kind.interval, 0, kind.backoff, random.Random())
        await _release(sessions, owner, lease, now, True, "", when, 0)
        if result.any_change:
            await _recheck_soon(sessions, now)
        return result
    finally:
        await engine.dispose()


async def _take_lease(
    sessions: leases.Sessions,
    owner: str,
    lease_seconds: float,
    wait: float,
    clock: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> leases.JobInfo:
    """Claim the origin-scan lease, polling while someone holds it; LeaseBusy after ``wait``."""
    started = clock()
    told = False
    while True:
        now = clock()
        try:
            job = await leases.claim(sessions, JOB_KEY, owner, now, lease_seconds)
            if job is not None:
                return job
            holder = await leases.get_job(sessions, JOB_KEY)
        except (SQLAlchemyError, OSError) as exc:
            raise ScanFailed(f"origin scan: database error: {exc}") from exc
        left = started + wait - now
        if left <= 0:
            raise LeaseBusy(holder, now - started)
        if not told and sys.stderr.isatty():
            who = holder.lease_owner if holder is not None else "another process"
            print(f"waiting up to {left:.0f} s for the origin scan by {who}", file=sys.stderr)
            told = True
        await sleep(min(POLL_SECONDS, left))


async def _release(
    sessions: leases.Sessions,
    owner: str,
    lease_seconds: float,
    now: float,
    ok: bool,
    error: str,
    when: float,
    failures: int,
) -> None:
    """End the lease as the runner's ``finish`` does; a database error only costs a warning
    (the lease then runs out by itself) and never hides the scan's own outcome."""
    try:
        await leases.finish(
            sessions, JOB_KEY, owner, now, ok=ok, error=error, next_run=when,
            failures=failures,
        )  # fmt: skip
    except Exception as exc:
        print(
            f"mirrorhub: cannot release the origin-scan lease (it runs out within "
            f"{lease_seconds:.0f} s): {exc}",
            file=sys.stderr,
        )


async def _recheck_soon(sessions: leases.Sessions, now: float) -> None:
    """Bring the workers' re-check of changed files forward, as a worker's origin scan
    does after a change (mirrors that already hold the new version count again sooner);
    a database error only costs a warning: the re-check then runs at its usual time."""
    try:
        await leases.run_soon(sessions, RECHECK_KEY, now)
    except Exception as exc:
        print(f"mirrorhub: cannot bring the re-check forward: {exc}", file=sys.stderr)


async def _stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def summary(result: OriginScanResult) -> str:
    return (
        f"origin scan: {result.seen:,} files: {result.new:,} new, {result.changed:,} changed, "
        f"{result.unchanged:,} unchanged, {result.deleted:,} deleted, "
        f"{result.skipped:,} skipped; {_size(result.bytes_hashed)} hashed "
        f"in {result.duration:.1f} s"
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[ScanProgress], None] | None]:
    """A rich progress display on a terminal; nothing (a final line only) otherwise."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        walk = bar.add_task("walking", total=None, detail="")
        hashing = bar.add_task("hashing", total=None, detail="", visible=False)

        def update(p: ScanProgress) -> None:
            if p.phase == "walk":
                bar.update(walk, detail=f"{p.walked:,} files")
                return
            bar.update(walk, total=1, completed=1, detail=f"{p.walked:,} files")
            bar.update(
                hashing,
                visible=True,
                total=max(p.bytes_to_hash, p.bytes_hashed, 1),
                completed=p.bytes_hashed if p.to_hash else 1,
                detail=f"{p.hashed:,}/{p.to_hash:,} files, "
                f"{_size(p.bytes_hashed)} of {_size(p.bytes_to_hash)}",
            )

        yield update
