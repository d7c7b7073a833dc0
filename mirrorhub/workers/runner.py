"""The job runner: claims due jobs through leases, runs them with a concurrency limit,
schedules the next run (interval or backoff), and shuts down cleanly.

The runner knows nothing about scans or probes: each :class:`JobKind` brings its own
coroutine. Jobs write their results in single transactions, so a job cancelled at shutdown
leaves no half-written state; its lease is released so another worker can take it at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from mirrorhub.workers import leases
from mirrorhub.workers.schedule import Backoff, next_run

log = logging.getLogger(__name__)
LIGHT_SLOTS = 4  # probes, re-checks, origin jobs: never queued behind slow scans


def poll_delay(tick: float, rng: random.Random) -> float:
    """Seconds until the next claim: ``tick`` on average, anywhere in [tick/2, 3*tick/2].

    Workers that poll on fixed ticks keep a fixed phase against each other, so the one whose
    tick falls first after a job comes due wins nearly every claim and the others idle.
    A random delay gives each worker a fair chance at every due job.
    """
    return tick * rng.uniform(0.5, 1.5)


@dataclass(frozen=True, slots=True)
class JobOutcome:
    ok: bool
    error: str = ""
    run_soon: tuple[str, ...] = ()  # job keys to bring forward (e.g. "recheck")
    retry_after: float | None = None  # not run yet (waiting for another job): try again soon


@dataclass(frozen=True, slots=True)
class JobKind:
    """Jobs whose key is ``prefix`` or starts with it (``scan:`` covers ``scan:7``)."""

    prefix: str
    interval: float
    backoff: Backoff
    run: Callable[[str], Awaitable[JobOutcome]]
    heavy: bool = False  # long-running: shares the limited heavy lane

    def matches(self, key: str) -> bool:
        return key == self.prefix or (self.prefix.endswith(":") and key.startswith(self.prefix))


class Runner:
    def __init__(
        self,
        sessions: leases.Sessions,
        kinds: Sequence[JobKind],
        wanted_keys: Callable[[], Awaitable[list[str]]],
        *,
        owner: str,
        concurrency: int = 4,
        lease_seconds: float = 120.0,
        tick: float = 1.0,
        grace: float = 10.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.sessions = sessions
        self.kinds = tuple(kinds)
        self.wanted_keys = wanted_keys
        self.owner = owner
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds
        self.tick = tick
        self.grace = grace
        self.clock = clock
        self.rng = rng or random.Random()
        self.running: dict[str, asyncio.Task[None]] = {}
        self.completed = 0
        self.abandoned = 0  # job tasks still running when shutdown gave up on them

    def kind_of(self, key: str) -> JobKind | None:
        return next((k for k in self.kinds if k.matches(key)), None)

    async def sync(self) -> None:
        keys = [k for k in await self.wanted_keys() if self.kind_of(k) is not None]
        await leases.sync_jobs(self.sessions, keys, [k.prefix for k in self.kinds])

    async def run(self, stop: asyncio.Event) -> None:
        """Run until ``stop`` is set; then let jobs in flight finish within ``grace``, cancel
        the rest and wait at most ``grace`` again for them to end."""
        last_sync = -1e18
        try:
            while not stop.is_set():
                now = self.clock()
                try:
                    if now - last_sync >= 2 * self.tick:
                        await self.sync()
                        last_sync = now
                    await self.claim_and_start()
                except Exception as exc:  # the database may be away: back off and retry
                    log.warning("worker %s cannot reach the database: %s", self.owner, exc)
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(stop.wait(), 5 * self.tick)
                    continue
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_delay(self.tick, self.rng))
        finally:
            await self.shutdown()

    async def claim_and_start(self) -> None:
        """Claim due jobs this worker can run, in two lanes.

        Heavy jobs (full mirror scans, which can take minutes against a slow mirror) share
        ``concurrency`` slots; light jobs (probes, re-checks, the origin) have their own, so
        a crowd of unanswering mirrors cannot delay detection of a dead one.
        """
        now = self.clock()
        for heavy in (False, True):
            kinds = [k.prefix for k in self.kinds if k.heavy == heavy]
            busy = sum(
                1 for key in self.running if (kind := self.kind_of(key)) and kind.heavy == heavy
            )
            free = (self.concurrency if heavy else LIGHT_SLOTS) - busy
            if not kinds or free <= 0:
                continue
            for job in await leases.claim_due(
                self.sessions, self.owner, now, self.lease_seconds, free, kinds
            ):
                self.running[job.key] = asyncio.create_task(self._run_one(job))

    async def _run_one(self, job: leases.JobInfo) -> None:
        kind = self.kind_of(job.key)
        heartbeat = asyncio.create_task(
            leases.keep_lease(self.sessions, job.key, self.owner, self.lease_seconds, self.clock)
        )
        outcome: JobOutcome
        try:
            if kind is None:
                outcome = JobOutcome(False, "no handler for this job")
            else:
                outcome = await kind.run(job.key)
        except asyncio.CancelledError:
            heartbeat.cancel()
            await self._release(job, "abandoned at shutdown", retry_now=True)
            raise
        except Exception as exc:
            log.exception("job %s crashed", job.key)
            outcome = JobOutcome(False, f"{type(exc).__name__}: {exc}")
        finally:
            heartbeat.cancel()
            self.running.pop(job.key, None)
        failures = 0 if outcome.ok else job.failures + 1
        now = self.clock()
        interval = kind.interval if kind else 60.0
        backoff = kind.backoff if kind else Backoff(60.0, 3600.0)
        when = next_run(now, interval, failures, backoff, self.rng)
        if outcome.retry_after is not None:
            when = now + outcome.retry_after
        await leases.finish(
            self.sessions,
            job.key,
            self.owner,
            now,
            ok=outcome.ok,
            error=outcome.error,
            next_run=when,
            failures=failures,
        )
        for key in outcome.run_soon:
            await leases.run_soon(self.sessions, key, now)
        self.completed += 1

    async def _release(self, job: leases.JobInfo, error: str, *, retry_now: bool) -> None:
        now = self.clock()
        with contextlib.suppress(Exception):
            await leases.finish(
                self.sessions,
                job.key,
                self.owner,
                now,
                ok=False,
                error=error,
                next_run=now if retry_now else now + 60,
                failures=job.failures,
            )

    async def shutdown(self) -> None:
        tasks = list(self.running.values())
        if not tasks:
            return
        _, pending = await asyncio.wait(tasks, timeout=self.grace)
        if not pending:
            return
        for task in pending:
            task.cancel()
        # A job that swallows its cancellation, or a lease release stuck on the database,
        # must not keep the process from exiting: one more grace period, then leave it.
        _, stuck = await asyncio.wait(pending, timeout=self.grace)
        for task in stuck:
            log.warning("a job did not stop within %s s of its cancellation: %s", self.grace, task)
        self.abandoned = len(stuck)
