"""What download statistics cost on the hot path: the same Dispatcher with and without counting.

    .venv/bin/python -m bench.stats_overhead [--files 100000] [--mirrors 200] [--passes 7]

Same synthetic install and request mix as bench/hotpath.py (uvicorn-shaped scopes, a ``send``
that does nothing). Two Dispatchers share one index and one GeoIP reader; one has the
``StatsCounter`` recorder that ``create_app`` registers, the other none. Passes over the same
10,000 requests alternate between them (after a warm pass each), so machine noise hits both
alike; reported: median µs per request each, the difference, and the loss of throughput
(1 - off/on time). ``--range-share`` makes that share of requests carry a ``Range`` header
(the dedup path). Then the flush of what the passes counted is timed (swap, merge, upsert
into the bench SQLite database) and spread over the requests it covered: that work runs on
the same event loop, off the request path. Results: bench/results/stats_overhead.json.

``--wrk`` instead runs the redirect benchmark's servers (bench/server.py, uvicorn as in
``mirrorhub serve``) twice, ``stats_enabled`` true and false, and alternates wrk rounds
between them: req/s and server CPU time per request, with the flush task running.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.hotpath import bench_settings, build_app, scope_for
from bench.hotpath import cpu_per_call as per_call  # CPU µs per request
from bench.synth import build_database, client_addresses, request_path, write_geoip
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.settings import Settings
from mirrorhub.stats.counter import StatsCounter
from mirrorhub.stats.flush import StatsFlusher
from mirrorhub.web.redirect import Dispatcher

RESULTS = Path(__file__).resolve().parent / "results"


async def measure(
    plain: Dispatcher, scopes: list[dict[str, Any]], passes: int, settings: Settings
) -> dict[str, Any]:
    counter = StatsCounter(
        plain.holder,
        range_window=settings.stats_range_window_seconds,
        max_clients=settings.stats_range_clients,
    )
    counting = Dispatcher(
        settings, plain.holder, plain.geo, plain.inner, plain.origin, random.Random(1),
        plain.views, recorder=counter,
    )  # fmt: skip
    counting._contexts = plain._contexts  # same warm client cache for both
    await per_call(scopes, plain)  # warm GeoIP and profile caches
    await per_call(scopes, counting)  # and the counter's dicts
    off: list[float] = []
    on: list[float] = []
    for _ in range(passes):
        off.append(await per_call(scopes, plain))
        on.append(await per_call(scopes, counting))
    counted = counter.counted
    engine = create_engine(settings.database_url)
    try:
        flusher = StatsFlusher(counter, session_factory(engine))
        started = time.perf_counter()
        ok = await flusher.flush()
        flush_s = time.perf_counter() - started
    finally:
        await engine.dispose()
    off_us, on_us = statistics.median(off), statistics.median(on)
    requests = len(scopes) * (passes + 1)
    return {
        "stats_off_us": round(off_us, 2),
        "stats_on_us": round(on_us, 2),
        "record_cost_us": round(on_us - off_us, 2),
        "throughput_loss": round(1 - off_us / on_us, 4),
        "passes_off_us": [round(x, 1) for x in off],
        "passes_on_us": [round(x, 1) for x in on],
        "counted": counted,
        "deduplicated": counter.deduplicated,
        "requests_on": requests,
        "flush_ok": ok,
        "flushed": flusher.flushed,
        "flush_seconds": round(flush_s, 4),
        "flush_us_per_request": round(flush_s / requests * 1e6, 3),
    }


def run_wrk_mode(
    args: argparse.Namespace, workdir: Path, samples: list[tuple[str, str]], config: dict[str, Any]
) -> dict[str, Any]:
    from bench.redirect import run_wrk, running, start_server, wait_ready, write_lua

    lua = workdir / "load.lua"
    write_lua(lua, samples)
    servers: list[Any] = []
    with running(servers):
        for name, enabled in (("stats-on", True), ("stats-off", False)):
            server = start_server(
                name, ["mirrorhub", json.dumps({**config, "stats_enabled": enabled})], workdir
            )
            servers.append(server)
            wait_ready(server, args.files)
        opts = {"threads": args.threads, "connections": args.connections}
        for server in servers:
            run_wrk(server, lua, duration=args.warmup, **opts)
        runs: dict[str, list[dict[str, Any]]] = {s.name: [] for s in servers}
        for rnd in range(args.rounds):
            for server in servers if rnd % 2 == 0 else servers[::-1]:
                result = run_wrk(server, lua, duration=args.duration, **opts)
                runs[server.name].append(result)
                print(
                    f"round {rnd + 1} {server.name:<9} {result['rps']:8.0f} req/s  "
                    f"cpu {result['server_cpu_us_per_request']:6.1f} us/req  "
                    f"statuses {result['statuses']}",
                    flush=True,
                )
    out: dict[str, Any] = {}
    for name, results in runs.items():
        out[name] = {
            "rps_median": round(statistics.median(r["rps"] for r in results)),
            "cpu_us_per_request_median": statistics.median(
                r["server_cpu_us_per_request"] for r in results
            ),
            "rps": [round(r["rps"]) for r in results],
            "cpu_us_per_request": [r["server_cpu_us_per_request"] for r in results],
        }
    on, off = out["stats-on"], out["stats-off"]
    out["throughput_loss_rps"] = round(1 - on["rps_median"] / off["rps_median"], 4)
    out["throughput_loss_cpu"] = round(
        1 - off["cpu_us_per_request_median"] / on["cpu_us_per_request_median"], 4
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--mirrors", type=int, default=200)
    parser.add_argument("--clients", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--passes", type=int, default=7)
    parser.add_argument("--range-share", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--wrk", action="store_true", help="servers under wrk instead")
    parser.add_argument("--duration", type=int, default=15, help="--wrk: seconds per run")
    parser.add_argument("--warmup", type=int, default=5, help="--wrk: warm-up seconds")
    parser.add_argument("--rounds", type=int, default=4, help="--wrk: rounds per server")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-stats-"))
    try:
        geo = write_geoip(workdir)
        stats = build_database(
            workdir / "mirrorhub.db",
            files=args.files,
            mirrors=args.mirrors,
            blocks=geo.blocks,
            progress=False,
        )
        rng = random.Random(args.seed)
        clients = client_addresses(geo.blocks, args.clients)
        if args.wrk:
            samples = [
                (request_path(rng.choice(stats.redirectable)), rng.choice(clients))
                for _ in range(args.samples)
            ]
            config = {
                "database_url": f"sqlite:///{workdir / 'mirrorhub.db'}",
                "geoip_city_db": str(geo.city_db),
                "geoip_asn_db": str(geo.asn_db),
                "trusted_proxies": ["127.0.0.1/32"],
                "origin_url": "http://origin.example.org/",
            }
            figures = run_wrk_mode(args, workdir, samples, config)
            return _report(args, figures, "stats_overhead_wrk")
        scopes = []
        for _ in range(args.samples):
            scope = scope_for(request_path(rng.choice(stats.redirectable)), rng.choice(clients))
            if rng.random() < args.range_share:
                scope["headers"].append((b"range", b"bytes=0-"))
            scopes.append(scope)
        settings = bench_settings(workdir, geo)
        app = asyncio.run(build_app(workdir, settings))
        figures = asyncio.run(measure(app, scopes, args.passes, settings))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return _report(args, figures, "stats_overhead")


def _report(args: argparse.Namespace, figures: dict[str, Any], name: str) -> int:
    result = {
        "benchmark": name,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "files": args.files,
            "mirrors": args.mirrors,
            "clients": args.clients,
            "samples": args.samples,
            "range_share": args.range_share,
        },
        **figures,
    }
    output = args.output or RESULTS / f"{name}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "setup"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
