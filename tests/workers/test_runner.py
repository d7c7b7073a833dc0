"""The runner on real databases: leases, intervals, backoff, shutdown, take-over."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.workers import leases
from mirrorhub.workers.runner import JobKind, JobOutcome, Runner, poll_delay
from mirrorhub.workers.schedule import Backoff, next_run

Sessions = async_sessionmaker[AsyncSession]


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_backoff_grows_and_is_capped() -> None:
    rng = random.Random(1)
    b = Backoff(10, 100, jitter=0)
    assert [b.delay(n, rng) for n in range(6)] == [0, 10, 20, 40, 80, 100]
    assert next_run(0, 60, 0, b, rng) == 60
    assert next_run(0, 60, 3, b, rng) == 40


async def wanted() -> list[str]:
    return ["scan:1", "scan:2", "probe"]


async def test_jobs_run_once_then_wait_for_their_interval(sessions: Sessions) -> None:
    ran: list[str] = []

    async def job(key: str) -> JobOutcome:
        ran.append(key)
        return JobOutcome(ok=key != "scan:2", error="boom" if key == "scan:2" else "")

    clock = Clock()
    kinds = [
        JobKind("scan:", 100, Backoff(10, 50, 0), job),
        JobKind("probe", 30, Backoff(5, 5, 0), job),
    ]
    runner = Runner(sessions, kinds, wanted, owner="w1", clock=clock, rng=random.Random(0))
    await runner.sync()
    await runner.claim_and_start()
    await asyncio.gather(*runner.running.values())
    assert sorted(ran) == ["probe", "scan:1", "scan:2"]
    jobs = {j.key: j for j in await leases.list_jobs(sessions)}
    assert jobs["scan:1"].next_run == 1100 and jobs["scan:1"].failures == 0
    assert jobs["scan:2"].next_run == 1010 and jobs["scan:2"].failures == 1
    assert jobs["scan:2"].last_error == "boom" and jobs["probe"].next_run == 1030
    assert all(j.lease_owner == "" for j in jobs.values())
    # Nothing is due until the clock moves.
    await runner.claim_and_start()
    assert runner.running == {}
    clock.t = 1010
    await runner.claim_and_start()
    await asyncio.gather(*runner.running.values())
    assert ran.count("scan:2") == 2
    assert {j.key: j for j in await leases.list_jobs(sessions)}["scan:2"].failures == 2


async def test_two_workers_never_run_the_same_job_at_once(sessions: Sessions) -> None:
    active: set[str] = set()
    overlaps: list[str] = []
    runs: list[str] = []

    async def job(key: str) -> JobOutcome:
        if key in active:
            overlaps.append(key)
        active.add(key)
        runs.append(key)
        await asyncio.sleep(0.05)
        active.discard(key)
        return JobOutcome(True)

    kinds = [JobKind("scan:", 3600, Backoff(1, 1), job), JobKind("probe", 3600, Backoff(1, 1), job)]
    r1 = Runner(sessions, kinds, wanted, owner="w1", concurrency=2, tick=0.01)
    r2 = Runner(sessions, kinds, wanted, owner="w2", concurrency=2, tick=0.01)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(r.run(stop)) for r in (r1, r2)]
    await asyncio.sleep(0.6)
    stop.set()
    await asyncio.gather(*tasks)
    assert overlaps == [] and sorted(runs) == ["probe", "scan:1", "scan:2"]
    assert r1.completed + r2.completed == 3


async def stopped_during_a_probe(
    sessions: Sessions, job: Callable[[str, asyncio.Event], Awaitable[JobOutcome]]
) -> tuple[Runner, asyncio.Task[None]]:
    """A runner (grace 0.1 s) whose only job is ``job(key, started)``, told to stop once
    the job has set ``started``; the runner's task is returned still running."""
    started = asyncio.Event()

    async def run(key: str) -> JobOutcome:
        return await job(key, started)

    async def only_probe() -> list[str]:
        return ["probe"]

    runner = Runner(
        sessions, [JobKind("probe", 30, Backoff(1, 1), run)], only_probe, owner="w1",
        tick=0.01, grace=0.1,
    )  # fmt: skip
    task = asyncio.create_task(runner.run(stop := asyncio.Event()))
    await asyncio.wait_for(started.wait(), 5)
    stop.set()
    return runner, task


async def test_shutdown_abandons_and_releases_a_long_job(sessions: Sessions) -> None:
    async def slow(key: str, started: asyncio.Event) -> JobOutcome:
        started.set()
        await asyncio.sleep(60)
        return JobOutcome(True)

    _, task = await stopped_during_a_probe(sessions, slow)
    await asyncio.wait_for(task, 5)
    (job,) = await leases.list_jobs(sessions)
    assert job.lease_owner == "" and job.last_error == "abandoned at shutdown"


async def test_shutdown_lets_a_job_finish_within_the_grace(sessions: Sessions) -> None:
    async def short(key: str, started: asyncio.Event) -> JobOutcome:
        started.set()
        await asyncio.sleep(0.05)
        return JobOutcome(True)

    runner, task = await stopped_during_a_probe(sessions, short)
    await asyncio.wait_for(task, 5)
    (job,) = await leases.list_jobs(sessions)
    assert (runner.completed, runner.abandoned) == (1, 0)
    assert job.lease_owner == "" and job.last_error == "" and job.failures == 0


async def test_shutdown_gives_up_on_a_job_that_ignores_its_cancellation(
    sessions: Sessions,
) -> None:
    release = asyncio.Event()

    async def stubborn(key: str, started: asyncio.Event) -> JobOutcome:
        started.set()
        while not release.is_set():
            # e.g. a library that retries through a cancellation
            with contextlib.suppress(asyncio.CancelledError):
                await release.wait()
        return JobOutcome(True)

    runner, task = await stopped_during_a_probe(sessions, stubborn)
    done, _ = await asyncio.wait({task}, timeout=5)  # without the limit: until ``release``
    release.set()
    assert task in done and runner.abandoned == 1
    await asyncio.sleep(0.1)  # let the job end; it records its run as it would have
    assert runner.running == {}


async def test_an_expired_lease_is_taken_over(sessions: Sessions) -> None:
    await leases.sync_jobs(sessions, ["probe"], ["probe"])
    (dead,) = await leases.claim_due(sessions, "dead-worker", 1000, 30, 5)
    assert dead.lease_owner == "dead-worker"
    assert await leases.claim_due(sessions, "w2", 1010, 30, 5) == []
    (taken,) = await leases.claim_due(sessions, "w2", 1031, 30, 5)
    assert taken.lease_owner == "w2"
    assert not await leases.renew(sessions, "probe", "dead-worker", 2000)


async def test_claim_takes_a_lease_due_or_not_and_creates_a_missing_row(
    sessions: Sessions,
) -> None:
    """``leases.claim`` (``mirrorhub scan-origin``): same lease rules, no schedule, no sync."""
    assert await leases.get_job(sessions, "origin-scan") is None
    first, second = await asyncio.gather(
        leases.claim(sessions, "origin-scan", "cli-1", 1000, 30),
        leases.claim(sessions, "origin-scan", "cli-2", 1000, 30),
    )
    got = [j for j in (first, second) if j is not None]
    assert [(j.lease_owner, j.lease_until, j.last_started) for j in got] in (
        [("cli-1", 1030, 1000)],
        [("cli-2", 1030, 1000)],
    )
    holder = got[0].lease_owner
    # Held: neither a worker, nor another claim, nor the holder itself takes it again.
    assert await leases.claim_due(sessions, "w1", 1010, 30, 5) == []
    assert await leases.claim(sessions, "origin-scan", "w1", 1010, 30) is None
    assert await leases.claim(sessions, "origin-scan", holder, 1010, 30) is None
    await leases.finish(
        sessions, "origin-scan", holder, 1020, ok=True, error="", next_run=1600, failures=0
    )
    # Not due for a worker now, but claim ignores next_run (and makes the job due now, as
    # a worker's claim finds it, so that a run_soon during the run can be told apart).
    assert await leases.claim_due(sessions, "w1", 1021, 30, 5) == []
    taken = await leases.claim(sessions, "origin-scan", "w1", 1021, 30)
    assert taken is not None and (taken.lease_owner, taken.next_run) == ("w1", 1021)
    again = await leases.claim(sessions, "origin-scan", "cli-3", 1052, 30)
    assert again is not None and again.lease_owner == "cli-3"
    # A worker's sync keeps the row it finds.
    await leases.sync_jobs(sessions, ["origin-scan"], ["origin-scan"])
    info = await leases.get_job(sessions, "origin-scan")
    assert info is not None and (info.lease_owner, info.last_finished) == ("cli-3", 1020)


async def test_a_run_soon_during_a_run_makes_the_job_due_when_it_ends(
    sessions: Sessions,
) -> None:
    """A trace-file change seen while the origin scan runs must not wait a whole interval."""
    release = asyncio.Event()
    ran: list[float] = []
    clock = Clock()

    async def scan(key: str) -> JobOutcome:
        ran.append(clock())
        await release.wait()
        return JobOutcome(True)

    kinds = [JobKind("origin-scan", 600, Backoff(10, 50, 0), scan)]

    async def keys() -> list[str]:
        return ["origin-scan"]

    runner = Runner(sessions, kinds, keys, owner="w1", clock=clock, rng=random.Random(0))
    await runner.sync()
    await runner.claim_and_start()
    await asyncio.sleep(0)
    assert ran == [1000.0]
    clock.t = 1005.0
    await leases.run_soon(sessions, "origin-scan", 999.0)  # a requester whose clock is behind
    await leases.run_soon(sessions, "origin-scan", 1006.0)  # a second request changes nothing
    clock.t = 1010.0
    release.set()
    await asyncio.gather(*runner.running.values())
    (job,) = await leases.list_jobs(sessions)
    assert job.lease_owner == "" and 1000.0 < job.next_run <= 1010.0  # due again at once
    release.clear()
    await runner.claim_and_start()
    await asyncio.sleep(0)
    assert ran == [1000.0, 1010.0]
    clock.t = 1020.0
    release.set()
    await asyncio.gather(*runner.running.values())
    (job,) = await leases.list_jobs(sessions)
    assert job.next_run == 1620.0  # no request this time: one interval


async def test_a_job_claimed_before_it_was_due_is_not_mistaken_for_a_request(
    sessions: Sessions,
) -> None:
    await leases.sync_jobs(sessions, ["origin-scan"], ["origin-scan"])
    await leases.finish(sessions, "origin-scan", "", 1000, ok=True, error="", next_run=1100,
                        failures=0)  # fmt: skip
    held = await leases.claim(sessions, "origin-scan", "cli", 1010, 30)  # due only at 1100
    assert held is not None
    await leases.finish(
        sessions, "origin-scan", "cli", 1020, ok=True, error="", next_run=1620, failures=0
    )
    info = await leases.get_job(sessions, "origin-scan")
    assert info is not None and info.next_run == 1620


async def test_workers_only_claim_jobs_they_can_run(sessions: Sessions) -> None:
    await leases.sync_jobs(
        sessions, ["origin-scan", "scan:1", "probe"], ["origin-scan", "scan:", "probe"]
    )
    got = await leases.claim_due(sessions, "no-origin", 1000, 30, 10, ["scan:", "probe"])
    assert sorted(j.key for j in got) == ["probe", "scan:1"]
    (origin,) = await leases.claim_due(sessions, "origin-host", 1000, 30, 10, ["origin-scan"])
    assert origin.key == "origin-scan"


async def test_slow_scans_do_not_hold_up_light_jobs(sessions: Sessions) -> None:
    release = asyncio.Event()
    ran: list[str] = []

    async def slow_scan(key: str) -> JobOutcome:
        await release.wait()
        return JobOutcome(True)

    async def probe(key: str) -> JobOutcome:
        ran.append(key)
        return JobOutcome(True)

    async def keys() -> list[str]:
        return ["scan:1", "scan:2", "scan:3", "probe"]

    kinds = [
        JobKind("scan:", 3600, Backoff(1, 1), slow_scan, heavy=True),
        JobKind("probe", 3600, Backoff(1, 1), probe),
    ]
    runner = Runner(sessions, kinds, keys, owner="w1", concurrency=2)
    await runner.sync()
    await runner.claim_and_start()
    await asyncio.sleep(0.05)
    # Two scans fill the heavy lane; the probe still ran; the third scan waits its turn.
    assert ran == ["probe"]
    assert sorted(k for k in runner.running if k.startswith("scan:")) in (
        ["scan:1", "scan:2"], ["scan:1", "scan:3"], ["scan:2", "scan:3"],
    )  # fmt: skip
    release.set()
    await asyncio.gather(*runner.running.values())


async def test_a_runner_never_claims_jobs_it_has_no_handler_for(sessions: Sessions) -> None:
    await leases.sync_jobs(sessions, ["origin-scan"], ["origin-scan"])

    async def probe(key: str) -> JobOutcome:
        return JobOutcome(True)

    async def keys() -> list[str]:
        return ["probe"]

    runner = Runner(sessions, [JobKind("probe", 60, Backoff(1, 1), probe)], keys, owner="w")
    await runner.sync()
    await runner.claim_and_start()
    assert list(runner.running) == ["probe"]
    await asyncio.gather(*runner.running.values())


def _claims_won(
    delays: list[Callable[[], float]], phases: list[float], due: list[float]
) -> list[int]:
    """Who claims each due job first when worker i polls at phases[i], then after delays[i]()."""
    polls = []
    for delay, t in zip(delays, phases, strict=True):
        times = []
        while t < due[-1] + 2:
            times.append(t)
            t += delay()
        polls.append(times)
    wins = [0] * len(delays)
    for d in due:
        firsts = [next(t for t in times if t >= d) for times in polls]
        wins[firsts.index(min(firsts))] += 1
    return wins


def test_random_poll_delays_share_claims_between_workers_in_step() -> None:
    rng = random.Random(7)
    due = sorted(rng.uniform(0, 1000) for _ in range(400))
    phases = [0.0, 0.02]  # two workers ticking almost in step
    fixed = _claims_won([lambda: 1.0, lambda: 1.0], phases, due)
    assert fixed[1] < 0.05 * len(due)  # the later tick wins almost nothing
    jittered = _claims_won([lambda: poll_delay(1.0, rng)] * 2, phases, due)
    assert min(jittered) > 0.35 * len(due), jittered
    assert all(0.5 <= poll_delay(2.0, rng) / 2.0 <= 1.5 for _ in range(1000))


async def test_the_runner_waits_a_random_delay_between_claims(sessions: Sessions) -> None:
    class Counting(random.Random):
        draws = 0

        def uniform(self, a: float, b: float) -> float:
            self.draws += 1
            return super().uniform(a, b)

    async def none() -> list[str]:
        return []

    rng = Counting(1)
    runner = Runner(sessions, [], none, owner="w1", tick=0.01, rng=rng)
    stop = asyncio.Event()
    task = asyncio.create_task(runner.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert rng.draws >= 5  # one draw per wait (about 30 waits of 5-15 ms)
