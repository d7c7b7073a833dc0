"""``mirrorhub scan-origin`` holds the workers' ``origin-scan`` lease while it scans.

Every test runs the real command in-process against a real database (SQLite and
PostgreSQL) and reads the ``jobs`` row it leaves; "a worker" is another lease owner written
into that row, exactly as the runner's claim would leave it.
"""

from __future__ import annotations

import asyncio
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from mirrorhub.cli import main
from mirrorhub.cli import origin as origin_cli
from mirrorhub.db.models import JobRow, OriginFileRow
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.workers import leases
from mirrorhub.workers.origin_scan import scan_origin as real_scan

BUSY = 75


def make_origin(root: Path) -> None:
    (root / "pub").mkdir(parents=True)
    (root / "pub" / "a.iso").write_bytes(b"a" * 2048)
    (root / "pub" / "b.txt").write_bytes(b"b")


@pytest.fixture
def origin(db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "origin"
    make_origin(root)
    monkeypatch.setenv("MIRRORHUB_DATABASE_URL", db_url)
    monkeypatch.setenv("MIRRORHUB_ORIGIN_DIR", str(root))
    monkeypatch.setenv("MIRRORHUB_ORIGIN_SCAN_INTERVAL", "600")
    return root


def on_db(db_url: str, work: Callable[[leases.Sessions], Any]) -> Any:
    """Run ``work(sessions)`` on a fresh engine of its own (another process, in effect)."""

    async def go() -> Any:
        engine = create_engine(db_url)
        try:
            return await work(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(go())


async def read_job(sessions: leases.Sessions) -> JobRow | None:
    async with sessions() as session:
        return await session.get(JobRow, "origin-scan")


def job_row(db_url: str) -> JobRow | None:
    return on_db(db_url, read_job)  # type: ignore[no-any-return]


def file_count(db_url: str) -> int:
    async def count(sessions: leases.Sessions) -> int:
        async with sessions() as session:
            return int((await session.execute(select(func.count(OriginFileRow.id)))).scalar_one())

    return on_db(db_url, count)  # type: ignore[no-any-return]


def hold_lease(
    db_url: str, owner: str, until: float, *, last_finished: float | None = None
) -> None:
    """A worker's claim as the runner leaves it (the row exists once a worker has synced)."""

    async def write(sessions: leases.Sessions) -> None:
        async with sessions.begin() as session:
            session.add(
                JobRow(
                    key="origin-scan", next_run=0.0, lease_owner=owner, lease_until=until,
                    failures=0, last_started=time.time(), last_finished=last_finished,
                    last_error="",
                )
            )  # fmt: skip

    on_db(db_url, write)


def assert_released_after_success(job: JobRow | None, started: float) -> None:
    assert job is not None
    assert (job.lease_owner, job.lease_until, job.failures, job.last_error) == ("", 0.0, 0, "")
    assert job.last_started is not None and started <= job.last_started
    assert job.last_finished is not None and job.last_started <= job.last_finished <= time.time()
    # One origin_scan_interval (600 s, 10 % jitter) ahead, as the runner's finish sets it.
    assert job.last_finished + 540 <= job.next_run <= job.last_finished + 660


def test_takes_renews_and_releases_the_lease_creating_the_job_row(
    origin: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker ever synced: the command creates the row, holds it, renews it, releases it."""
    monkeypatch.setenv("MIRRORHUB_JOB_LEASE_SECONDS", "0.6")
    seen: list[JobRow | None] = []

    async def slow_scan(sessions: leases.Sessions, *args: Any, **kwargs: Any) -> Any:
        seen.append(await read_job(sessions))
        await asyncio.sleep(1.5)  # well past the 0.6 s lease: only renewals keep it
        seen.append(await read_job(sessions))
        return await real_scan(sessions, *args, **kwargs)

    monkeypatch.setattr(origin_cli, "scan_origin", slow_scan)
    assert job_row(db_url) is None
    started = time.time()

    assert main(["scan-origin"]) == 0

    first, later = seen
    assert first is not None and later is not None
    assert first.lease_owner == later.lease_owner == origin_cli.lease_owner()
    assert first.lease_until >= started + 0.6
    assert later.lease_until > started + 1.5  # renewed while the scan ran
    assert file_count(db_url) == 2
    assert_released_after_success(job_row(db_url), started)
    # A worker with the origin does not rescan straight after: the job is not due.
    due = on_db(db_url, lambda s: leases.claim_due(s, "w1", time.time(), 30, 5, ["origin-scan"]))
    assert due == []


def recheck_next_run(db_url: str) -> float | None:
    async def read(sessions: leases.Sessions) -> float | None:
        async with sessions() as session:
            row = await session.get(JobRow, "recheck")
            return None if row is None else row.next_run

    return on_db(db_url, read)  # type: ignore[no-any-return]


def test_a_scan_that_changed_files_brings_the_recheck_forward(origin: Path, db_url: str) -> None:
    later = time.time() + 3600

    async def workers_synced(sessions: leases.Sessions) -> None:
        await leases.sync_jobs(sessions, ["recheck"], ["recheck"])
        await leases.finish(sessions, "recheck", "", 0.0, ok=True, error="", next_run=later,
                            failures=0)  # fmt: skip

    on_db(db_url, workers_synced)
    assert recheck_next_run(db_url) == later
    started = time.time()
    assert main(["scan-origin"]) == 0  # two new files
    moved = recheck_next_run(db_url)
    assert moved is not None and started <= moved <= time.time()
    on_db(db_url, workers_synced)
    assert main(["scan-origin"]) == 0  # nothing changed: left where it was
    assert recheck_next_run(db_url) == later


def test_refuses_at_once_with_wait_0_while_a_worker_holds_the_lease(
    origin: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    until = time.time() + 300
    hold_lease(db_url, "worker-a:42", until)

    assert main(["scan-origin", "--wait", "0"]) == BUSY

    err = capsys.readouterr().err
    assert err.startswith("mirrorhub: error: an origin scan is already running: worker-a:42 ")
    assert "--wait" in err and err.count("\n") == 1
    assert file_count(db_url) == 0  # nothing scanned
    job = job_row(db_url)
    assert job is not None and (job.lease_owner, job.lease_until) == ("worker-a:42", until)


def test_gives_up_after_the_wait_while_the_lease_stays_held(
    origin: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    hold_lease(db_url, "worker-a:42", time.time() + 300)
    started = time.monotonic()

    assert main(["scan-origin", "--wait", "1.5"]) == BUSY

    assert 1.5 <= time.monotonic() - started < 10
    assert re.search(r"gave up after waiting \d+ s", capsys.readouterr().err)
    assert file_count(db_url) == 0
    job = job_row(db_url)
    assert job is not None and job.lease_owner == "worker-a:42"


def test_waits_for_the_worker_to_finish_then_scans(origin: Path, db_url: str) -> None:
    hold_lease(db_url, "worker-a:42", time.time() + 300)
    released: list[float] = []

    def worker_finishes() -> None:
        time.sleep(1.0)
        now = time.time()
        released.append(now)
        on_db(
            db_url,
            lambda s: leases.finish(
                s, "origin-scan", "worker-a:42", now, ok=True, error="", next_run=now + 600,
                failures=0,
            ),
        )  # fmt: skip

    thread = threading.Thread(target=worker_finishes)
    thread.start()
    try:
        assert main(["scan-origin"]) == 0  # default: waits (up to 600 s)
    finally:
        thread.join()
    assert_released_after_success(job_row(db_url), released[0])  # started after the release
    assert file_count(db_url) == 2


@pytest.mark.parametrize("expires_in", [-1.0, 1.0], ids=["expired", "expires-while-waiting"])
def test_a_dead_holders_lease_is_taken_over_once_it_runs_out(
    origin: Path, db_url: str, expires_in: float
) -> None:
    """A dead worker's (or killed scan-origin's) lease is never renewed and ends by itself."""
    until = time.time() + expires_in
    hold_lease(db_url, "dead-worker:7", until)

    assert main(["scan-origin"]) == 0

    job = job_row(db_url)
    assert_released_after_success(job, until)
    assert file_count(db_url) == 2


def test_a_failed_scan_releases_the_lease_and_backs_off(
    origin: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["scan-origin"]) == 0
    for f in (origin / "pub").iterdir():
        f.unlink()  # looks like an unmounted volume: refused

    assert main(["scan-origin"]) == 1

    assert "refusing to unpublish 2" in capsys.readouterr().err
    job = job_row(db_url)
    assert job is not None and job.last_finished is not None
    assert (job.lease_owner, job.lease_until, job.failures) == ("", 0.0, 1)
    assert "refusing to unpublish 2" in job.last_error
    # The runner's backoff for origin-scan: 30 s after a first failure (10 % jitter).
    assert job.last_finished + 27 <= job.next_run <= job.last_finished + 33


def test_ctrl_c_releases_the_lease(
    origin: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    seen: list[JobRow | None] = []

    async def interrupted_scan(sessions: leases.Sessions, *args: Any, **kwargs: Any) -> Any:
        seen.append(await read_job(sessions))
        signal.raise_signal(signal.SIGINT)  # the operator presses Ctrl-C mid-scan
        await asyncio.sleep(30)
        raise AssertionError("not interrupted")

    monkeypatch.setattr(origin_cli, "scan_origin", interrupted_scan)
    started = time.time()

    assert main(["scan-origin"]) == 130

    (during,) = seen
    assert during is not None and during.lease_owner == origin_cli.lease_owner()
    job = job_row(db_url)
    assert job is not None
    assert (job.lease_owner, job.lease_until, job.last_error) == (
        "",
        0.0,
        "scan-origin interrupted",
    )
    # Due again at once, as for a job the runner abandons at shutdown.
    assert job.last_finished is not None and started <= job.next_run <= job.last_finished


def test_wait_must_be_a_number_of_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["scan-origin", "--wait", "-1"])
    assert exit_info.value.code == 2
    assert "not a number of seconds >= 0" in capsys.readouterr().err
