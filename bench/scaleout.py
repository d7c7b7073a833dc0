"""Scale-out on PostgreSQL: two dispatcher processes vs one, and change propagation time.

    .venv/bin/python -m bench.scaleout [--files 20000] [--mirrors 200] [--duration 10]
                                       [--connections 32] [--rounds 3] [--changes 10]

Builds the synthetic install of bench/synth.py (SQLite), copies it into a throwaway
PostgreSQL database (``MH_BENCH_PG_URL``, default the server on 127.0.0.1:5432), and runs
``mirrorhub serve --no-workers`` processes against it (the real CLI: uvicorn with the
settings of ``mirrorhub serve``).

* **Throughput**: the same two wrk processes (one thread, connections/2 each, the Lua script
  of bench/redirect.py) either both aim at dispatcher A ("one") or one at A and one at B
  ("two"); rounds alternate. Reported: summed requests/s, and the ratio two / one.
* **Propagation**: a transaction changes a mirror and bumps the index version (what a scan
  or an admin edit does); the time until every dispatcher's ``/-/health`` shows the new
  version, polled every 5 ms. Measured with LISTEN/NOTIFY and with polling only
  (``MIRRORHUB_PG_NOTIFY=false``, ``MIRRORHUB_INDEX_REFRESH_SECONDS`` default 2 s). It
  includes re-reading the mirrors and applying the change in place (before the change log,
  a whole rebuild, which grew with the number of files).

Not a test: on the shared 2-core machine two dispatchers and two wrk processes compete for
the same cores, so "two" measures contention as much as scaling. Results go to
bench/results/scaleout.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
from sqlalchemy import create_engine as create_sync_engine
from sqlalchemy import select, text

from bench.redirect import RESULT_MARK, free_port, machine, write_lua
from bench.synth import build_database, client_addresses, request_path, write_geoip
from mirrorhub.db.migrate import upgrade
from mirrorhub.db.models import Base
from mirrorhub.db.session import create_engine

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
PG_SERVER = os.environ.get("MH_BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# --- the database ---------------------------------------------------------------------------


async def _admin(sql: str) -> None:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(PG_SERVER, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def pg_database() -> Iterator[str]:
    name = f"mirrorhub_bench_{uuid.uuid4().hex[:8]}"
    asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    try:
        yield f"{PG_SERVER.rsplit('/', 1)[0]}/{name}"
    finally:
        asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def copy_to_pg(sqlite_path: Path, pg_url: str) -> float:
    """Copy every table of the synthetic SQLite install into the migrated PostgreSQL one."""
    started = time.perf_counter()
    upgrade(pg_url)
    source = create_sync_engine(f"sqlite:///{sqlite_path}")

    async def run() -> None:
        engine = create_engine(pg_url)
        async with engine.begin() as conn:
            for table in Base.metadata.sorted_tables:
                if table.name == "index_version":
                    continue  # one row, created by the migration
                with source.connect() as src:
                    rows = [dict(r._mapping) for r in src.execute(select(table))]
                for i in range(0, len(rows), 20_000):
                    await conn.execute(table.insert(), rows[i : i + 20_000])
            # Sequences do not move on explicit ids; later inserts must not collide.
            for table in Base.metadata.sorted_tables:
                if "id" in table.c and table.c.id.autoincrement is True and table.c.id.primary_key:
                    await conn.execute(
                        text(
                            f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), "
                            f"coalesce((SELECT max(id) FROM {table.name}), 0) + 1, false)"
                        )
                    )
            await conn.execute(text("UPDATE index_version SET version = 1"))
        await engine.dispose()

    asyncio.run(run())
    source.dispose()
    return time.perf_counter() - started


# --- dispatchers ----------------------------------------------------------------------------


class Dispatcher:
    def __init__(self, name: str, env: dict[str, str], workdir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / f"{name}.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "mirrorhub", "serve", "--no-workers", "--no-upgrade",
                 "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=BENCH.parent,
            )  # fmt: skip

    def wait_ready(self, files: int, timeout: float = 180.0) -> float:
        started = time.monotonic()
        with httpx.Client(timeout=5.0) as client:
            while time.monotonic() - started < timeout:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/-/health").json().get("files") == files:
                        return time.monotonic() - started
                time.sleep(0.2)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextlib.contextmanager
def dispatchers(
    n: int, env: dict[str, str], workdir: Path, files: int
) -> Iterator[list[Dispatcher]]:
    started = [Dispatcher(f"d{i}-{uuid.uuid4().hex[:4]}", env, workdir) for i in range(n)]
    try:
        for d in started:
            d.wait_ready(files)
        yield started
    finally:
        for d in started:
            d.stop()


# --- throughput -----------------------------------------------------------------------------


def wrk_pair(targets: list[str], lua: Path, connections: int, duration: int) -> dict[str, Any]:
    """Two wrk processes at once (one thread each), at the given base URLs; summed."""
    procs = [
        subprocess.Popen(
            [
                "wrk",
                "-t1",
                f"-c{connections // 2}",
                f"-d{duration}s",
                "--timeout",
                "5s",
                "--latency",
                "-s",
                str(lua),
                url + "/",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for url in targets
    ]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=duration + 60)
        line = next((x for x in out.splitlines() if x.startswith(RESULT_MARK)), None)
        if line is None:
            raise RuntimeError(f"no result from wrk:\n{out}\n{err}")
        results.append(json.loads(line[len(RESULT_MARK) :]))
    rps = sum(r["requests"] / (r["duration_us"] / 1e6) for r in results)
    statuses: dict[str, int] = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    return {
        "rps": round(rps),
        "statuses": statuses,
        "p99_ms": max(r["latency_us"]["p99"] for r in results) / 1000,
    }


# --- propagation ----------------------------------------------------------------------------


async def change_and_wait(
    pg_url: str, urls: list[str], rng: random.Random, limit: float = 30.0
) -> list[float]:
    """Change a mirror and bump the version in one transaction; seconds until each
    dispatcher's health shows it (time measured from the commit)."""
    from mirrorhub.db import repositories

    engine = create_engine(pg_url)
    async with httpx.AsyncClient(timeout=5.0) as client:
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE mirrors SET capacity = :c WHERE id = 1"), {"c": rng.randint(1, 999)}
            )
        from mirrorhub.db.session import session_factory

        async with session_factory(engine).begin() as session:
            await repositories.bump_version(session, files=())  # a mirror change
            version = await repositories.current_version(session)
        committed = time.perf_counter()

        async def watch(url: str) -> float:
            while time.perf_counter() - committed < limit:
                health = (await client.get(url + "/-/health")).json()
                if health["index_version"] >= version:
                    return time.perf_counter() - committed
                await asyncio.sleep(0.005)
            raise RuntimeError(f"{url} did not reach version {version}")

        seen = await asyncio.gather(*(watch(u) for u in urls))
    await engine.dispose()
    return list(seen)


def propagation(pg_url: str, urls: list[str], changes: int, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    every: list[float] = []
    for _ in range(changes):
        time.sleep(rng.uniform(0.3, 1.5))  # no phase lock with the periodic check
        every.append(max(asyncio.run(change_and_wait(pg_url, urls, rng))))
    return {
        "changes": changes,
        "all_dispatchers_s": {
            "median": round(statistics.median(every), 3),
            "mean": round(statistics.fmean(every), 3),
            "max": round(max(every), 3),
            "min": round(min(every), 3),
        },
        "samples_s": [round(x, 3) for x in every],
    }


# --- the run --------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    geo = write_geoip(workdir)
    print(f"building {args.files:,} files x {args.mirrors} mirrors ...", flush=True)
    stats = build_database(
        workdir / "synth.db", files=args.files, mirrors=args.mirrors, blocks=geo.blocks,
        progress=False,
    )  # fmt: skip
    rng = random.Random(args.seed)
    clients = client_addresses(geo.blocks, 5_000)
    samples = [
        (request_path(rng.choice(stats.redirectable)), rng.choice(clients)) for _ in range(10_000)
    ]
    lua = workdir / "load.lua"
    write_lua(lua, samples)
    with pg_database() as pg_url:
        copied = copy_to_pg(workdir / "synth.db", pg_url)
        print(f"copied into PostgreSQL in {copied:.1f} s", flush=True)
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MIRRORHUB_")},
            "MIRRORHUB_DATABASE_URL": pg_url,
            "MIRRORHUB_GEOIP_CITY_DB": str(geo.city_db),
            "MIRRORHUB_GEOIP_ASN_DB": str(geo.asn_db),
            "MIRRORHUB_TRUSTED_PROXIES": "127.0.0.1",
            "MIRRORHUB_ORIGIN_URL": "http://origin.example.org/",
            "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true",
        }
        result: dict[str, Any] = {}
        with dispatchers(2, env, workdir, args.files) as (a, b):
            for d in (a, b):
                wrk_pair([d.url], lua, 4, 2)  # warm-up: caches, first GeoIP lookups
            runs: dict[str, list[dict[str, Any]]] = {"one": [], "two": []}
            for rnd in range(1, args.rounds + 1):
                for name, targets in (("one", [a.url, a.url]), ("two", [a.url, b.url])):
                    r = wrk_pair(targets, lua, args.connections, args.duration)
                    runs[name].append(r)
                    print(f"round {rnd} {name}: {r['rps']:7d} req/s  p99 {r['p99_ms']:.1f} ms "
                          f"statuses {r['statuses']}", flush=True)  # fmt: skip
            one = statistics.median(r["rps"] for r in runs["one"])
            two = statistics.median(r["rps"] for r in runs["two"])
            result["throughput"] = {
                "one_dispatcher_rps": one,
                "two_dispatchers_rps": two,
                "ratio_two_vs_one": round(two / one, 2),
                "runs": runs,
            }
            print(f"one {one:.0f} req/s, two {two:.0f} req/s: x{two / one:.2f}", flush=True)
            result["propagation_notify"] = propagation(pg_url, [a.url, b.url], args.changes, 1)
            print(f"NOTIFY: {result['propagation_notify']['all_dispatchers_s']}", flush=True)
        polling = {**env, "MIRRORHUB_PG_NOTIFY": "false"}
        with dispatchers(2, polling, workdir, args.files) as (a, b):
            result["propagation_polling"] = propagation(pg_url, [a.url, b.url], args.changes, 2)
            print(
                f"polling (2 s): {result['propagation_polling']['all_dispatchers_s']}", flush=True
            )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--mirrors", type=int, default=200)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--changes", type=int, default=10, help="changes per propagation mode")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--output", type=Path, default=RESULTS / "scaleout.json")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-scaleout-"))
    try:
        figures = run(args, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = {
        "benchmark": "scaleout",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "setup": {k: v for k, v in vars(args).items() if k != "output"},
        **figures,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=2, default=str) + "\n")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
