"""Two `mirrorhub worker` processes on one PostgreSQL share the jobs through leases.

Three nginx mirrors (rate-limited so that a scan takes about a second and a lease can be
seen) and one mirror behind a listing server that takes 5 s to answer its listing. While
both workers run: every mirror is scanned once per interval, never twice at once, and both
workers get scans. Then the worker in the middle of the slow scan is killed with SIGKILL:
its lease runs out, the other worker scans that mirror to the end, and the database holds
no trace of the half-done scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from mirrorhub.notify import asyncpg_dsn
from tests.conftest import _reset_pg
from tests.scaleout.procs import base_env, cli, mirrorhub_process, query, wait_until
from tests.servers import Reply, listing_server, make_tree, nginx_autoindex, tree_route

T0 = 1_700_000_000
FILES = {f"f{i}.iso": (20_000 + i, T0) for i in range(4)}
INTERVAL = 3.0
LEASE = 3.0
SLOW_LISTING = 5.0


@pytest.fixture
def pg_url(pg_database_url: str) -> str:
    asyncio.run(_reset_pg(pg_database_url))
    return pg_database_url


class LeaseWatch:
    """Polls the jobs table every 20 ms from a thread: who held which lease, when."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.dsn = asyncpg_dsn(db_url)
        self.seen: set[tuple[str, str, float]] = set()  # (job key, owner, last_started)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.dsn)
        try:
            while not self._stop.is_set():
                rows = await conn.fetch(
                    "SELECT key, lease_owner, last_started FROM jobs"
                    " WHERE lease_owner <> '' AND lease_until > extract(epoch from now())"
                )
                self.seen.update((r[0], r[1], r[2]) for r in rows)
                await asyncio.sleep(0.02)
        finally:
            await conn.close()

    def holders(self, prefix: str) -> set[str]:
        return {owner for key, owner, _ in set(self.seen) if key.startswith(prefix)}

    def current(self, key: str) -> tuple[str, float] | None:
        rows = query(
            self.db_url,
            "SELECT lease_owner, last_started FROM jobs WHERE key = :k AND lease_owner <> ''",
            k=key,
        )
        return (rows[0][0], rows[0][1]) if rows else None

    @contextlib.contextmanager
    def running(self) -> Iterator[LeaseWatch]:
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join(5)


def scans(db_url: str) -> dict[str, list[tuple[float, float, bool]]]:
    """Per mirror name: (started_at, duration, ok) of every recorded scan, oldest first."""
    rows = query(
        db_url,
        "SELECT m.name, extract(epoch from s.started_at), s.duration_seconds, s.ok"
        " FROM mirror_scans s JOIN mirrors m ON m.id = s.mirror_id ORDER BY s.started_at",
    )
    out: dict[str, list[tuple[float, float, bool]]] = {}
    for name, started, duration, ok in rows:
        out.setdefault(name, []).append((float(started), float(duration), bool(ok)))
    return out


def test_two_workers_share_scans_and_survive_a_kill(pg_url: str, tmp_path: Path) -> None:
    origin = make_tree(tmp_path / "origin", FILES)
    env = base_env(
        pg_url,
        trace_file="",  # no lag probing: one listing page per scan
        scan_interval=str(INTERVAL),
        job_lease_seconds=str(LEASE),
        heartbeat_seconds="1",
        probe_interval="1",
        # Two scans per worker for four mirrors: a worker that polls first cannot take every
        # scan that comes due at once, as the default of 4 lets it (then which worker gets
        # work is the luck of the polls, and both getting some is only likely).
        worker_concurrency="2",
        # Longer than the slow listing: a never-scanned mirror is probed at its base URL, and
        # a mirror the probes call down is not scanned (its scan would only time out).
        probe_timeout_seconds=str(SLOW_LISTING + 3),
    )
    cli({**env, "MIRRORHUB_ORIGIN_DIR": str(origin)}, "scan-origin")

    def slow_root(path: str) -> Reply | None:
        if path == "/":
            time.sleep(SLOW_LISTING)  # the listing of a huge tree, in one page
        return None

    with contextlib.ExitStack() as stack:
        for i, address in enumerate(("127.0.0.2", "127.0.0.3", "127.0.0.4")):
            tree = make_tree(tmp_path / f"m{i}", FILES)
            url = stack.enter_context(
                nginx_autoindex(tree, address, workdir=tmp_path / f"n{i}", extra="limit_rate 450;")
            )
            cli(env, "mirror", "add", f"m{i}", "--http", url)
        slow_tree = make_tree(tmp_path / "slow", FILES)
        slow_url = stack.enter_context(
            listing_server("127.0.0.5", routes=[slow_root, tree_route(slow_tree)])
        )
        cli(env, "mirror", "add", "slow", "--http", slow_url)
        ((slow_id,),) = query(pg_url, "SELECT id FROM mirrors WHERE name = 'slow'")

        watch = stack.enter_context(LeaseWatch(pg_url).running())
        w1 = stack.enter_context(
            mirrorhub_process(
                ["worker", "--id", "w1"],
                {**env, "MIRRORHUB_ORIGIN_DIR": str(origin)},
                tmp_path / "w1.log",
            )
        )
        w2 = stack.enter_context(
            mirrorhub_process(["worker", "--id", "w2"], env, tmp_path / "w2.log")
        )
        start = time.time()
        # Both register in the process list.
        wait_until(
            lambda: {r[0] for r in query(pg_url, "SELECT id FROM processes")} == {"w1", "w2"},
            10,
            "both workers' heartbeats",
        )
        time.sleep(4 * INTERVAL)
        window_end = time.time()
        seen = scans(pg_url)
        for name in ("m0", "m1", "m2"):
            runs = [s for s in seen.get(name, []) if s[0] >= start]
            assert len(runs) >= 2, (name, runs)
            assert all(ok for _, _, ok in runs), (name, runs)
            for (s0, d0, _), (s1, _, _) in itertools.pairwise(runs):
                gap = s1 - (s0 + d0)  # idle time between two scans of one mirror
                # Once per interval: never sooner (no double run), never much later.
                assert INTERVAL * 0.9 - 0.05 <= gap <= INTERVAL * 1.1 + 2.0, (name, runs)
        # Work spreads: each worker has held scan leases; only w1 has the origin tree.
        assert watch.holders("scan:") == {"w1", "w2"}, watch.seen
        assert watch.holders("origin-") <= {"w1"}, watch.seen

        # Kill whichever worker is in the middle of the slow scan.
        key = f"scan:{slow_id}"
        (owner, started), _ = wait_until(
            lambda: (held := watch.current(key)) and time.time() - held[1] > 1.0 and held,
            20,
            "a worker in the middle of the slow scan",
        )
        victim, survivor = (w1, "w2") if owner == "w1" else (w2, "w1")
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait(5)
        killed_at = time.time()

        def finished_by_survivor() -> list[tuple[float, float, bool]]:
            return [s for s in scans(pg_url).get("slow", []) if s[0] > started + 0.5 and s[2]]

        _, took = wait_until(finished_by_survivor, LEASE + SLOW_LISTING + 15, "takeover")
        print(
            f"killed at {killed_at - start:.1f} s; slow scan done by {survivor} {took:.1f} s later"
        )
        assert watch.holders(key) >= {owner, survivor}
        # The killed scan left nothing: no scan row started when the victim's did.
        assert not [s for s in scans(pg_url).get("slow", []) if abs(s[0] - started) < 0.5]
        rows = query(pg_url, "SELECT lease_owner FROM jobs WHERE lease_owner <> ''")
        assert {r[0] for r in rows} <= {survivor}
        # The victim drops off the live list; the survivor keeps beating.
        wait_until(
            lambda: (
                {
                    r[0]
                    for r in query(
                        pg_url,
                        "SELECT id FROM processes WHERE heartbeat_at > extract(epoch from now()) - 3",
                    )
                }
                == {survivor}
            ),
            10,
            "the killed worker to leave the live list",
        )

        # The other mirrors keep being scanned by the survivor alone: each within an
        # interval, plus a lease the victim may have held on it running out, plus the
        # slow scan in one of the survivor's two slots (polled: the check above may come
        # before a mirror's next turn).
        def scanned_since_the_kill() -> bool:
            later = {n: [s for s in runs if s[0] > killed_at] for n, runs in scans(pg_url).items()}
            return all(later.get(n) for n in ("m0", "m1", "m2"))

        wait_until(
            scanned_since_the_kill, INTERVAL + LEASE + SLOW_LISTING + 5, "scans after the kill"
        )
        assert window_end < time.time()
