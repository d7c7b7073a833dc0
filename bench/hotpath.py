"""The hot path without a server: microseconds per request spent in mirrorhub's own code.

    .venv/bin/python -m bench.hotpath [--files 100000] [--mirrors 200] [--profile]

Same synthetic install and request mix as bench/redirect.py, but the Dispatcher is called
directly with ASGI scopes shaped like uvicorn's and a ``send`` that does nothing, so the
figures exclude HTTP parsing and socket I/O. Reports the whole ``Dispatcher.__call__`` and its
stages (parse = path + client address + GeoIP, lookup, decide = selection, link headers),
cold (first pass: empty GeoIP and profile caches) and warm (median of later passes).

The dispatcher is the one ``create_app`` builds, measured three ways in alternating passes
(CPU time): alone (no recorders, no load view: the figure of earlier runs), with the
recorders the app registers (statistics, load estimate, metrics), and with those plus a
capacity-aware load view as a server under wrk has it: the window estimate the first pass
left, scaled to ``--load-rate`` requests/s (10,000: what bench/redirect.py drives; every
mirror is then over capacity). ``--profile`` adds a cProfile listing of one warm pass of the
last. Results: bench/results/hotpath.json.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import ipaddress
import json
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

if __package__ in (None, ""):  # run as a script: make "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.synth import (
    GeoData,
    build_database,
    client_addresses,
    request_path,
    write_geoip,
)
from mirrorhub.db import index_load
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.index import build_index
from mirrorhub.load import LoadView, make_view
from mirrorhub.paths import normalize_path
from mirrorhub.settings import Settings
from mirrorhub.web.app import create_app, index_config
from mirrorhub.web.redirect import Dispatcher

RESULTS = Path(__file__).resolve().parent / "results"
PASSES = 3


def scope_for(path: str, address: str) -> dict[str, Any]:
    """An ASGI scope as uvicorn's httptools protocol builds it, from a trusted proxy."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8080),
        "client": ("127.0.0.1", 40000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": unquote(path),
        "raw_path": path.encode("ascii"),
        "query_string": b"",
        "headers": [
            (b"host", b"127.0.0.1:8080"),
            (b"x-forwarded-for", address.encode("ascii")),
        ],
        "state": {},
    }


def direct_scope(scope: dict[str, Any]) -> dict[str, Any]:
    """The smaller dict mirrorhub.web.protocol hands ``fast_redirect`` for the same request."""
    return {k: v for k, v in scope.items() if k not in ("asgi", "state")}


async def _noop_send(message: Any) -> None:
    return None


async def _receive() -> dict[str, Any]:
    return {"type": "http.request", "body": b"", "more_body": False}


async def per_call(scopes: list[dict[str, Any]], app: Dispatcher) -> float:
    started = time.perf_counter()
    for scope in scopes:
        await app(scope, _receive, _noop_send)
    return (time.perf_counter() - started) / len(scopes) * 1e6


async def cpu_per_call(scopes: list[dict[str, Any]], app: Dispatcher) -> float:
    started = time.process_time()
    for scope in scopes:
        await app(scope, _receive, _noop_send)
    return (time.process_time() - started) / len(scopes) * 1e6


def cpu_per_fast_call(scopes: list[dict[str, Any]], app: Dispatcher) -> float:
    """CPU µs per ``fast_redirect`` (what mirrorhub.web.protocol calls from the parser)."""
    fast = app.fast_redirect
    started = time.process_time()
    for scope in scopes:
        fast(scope)
    return (time.process_time() - started) / len(scopes) * 1e6


def saturated_view(app: Dispatcher, redirects: int, rate: float) -> LoadView:
    """A load view as a server under wrk has it: the bytes per mirror the app's recorders
    estimated over ``redirects`` redirects, as if they came at ``rate`` per second for the
    whole window."""
    state = app.inner.state.mirrorhub  # type: ignore[attr-defined]
    estimator = state.extras["load_estimator"]
    index = app.holder.current
    capacities = {s.mirror.name: s.mirror.capacity for s in index.slots}
    scale = rate * estimator.window / max(redirects, 1)
    # The load recorder hands this step's redirects to the estimator when asked.
    recorders = state.extras.get("recorders", [])
    estimate = next((r.estimate for r in recorders if hasattr(r, "estimate")), estimator.mbps)
    view = make_view(
        {m: v * scale for m, v in estimate().items()},
        {},
        capacities,
        window=estimator.window,
    )
    return view


def view_holders(app: Dispatcher) -> list[Any]:
    """The app's recorders that add each redirect to a load view (the LoadRecorder)."""
    recorders = app.inner.state.mirrorhub.extras.get("recorders", [])  # type: ignore[attr-defined]
    return [r for r in recorders if hasattr(r, "view")]


async def server_like(
    app: Dispatcher, scopes: list[dict[str, Any]], redirects: int, rate: float
) -> tuple[dict[str, Any], LoadView]:
    """The dispatcher alone, with the app's recorders, and with recorders + a load view,
    in alternating passes (the cold pass already ran with the recorders)."""
    recorder = app.recorder
    view = saturated_view(app, redirects, rate)
    for r in view_holders(app):
        r.view = view  # the LoadRecorder adds each redirect to the view it shares
    modes: dict[str, tuple[Any, Any]] = {
        "dispatcher_alone": (None, None),
        "with_recorders": (recorder, None),
        "with_recorders_and_load_view": (recorder, view),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    fast: dict[str, list[float]] = {name: [] for name in modes}
    direct = [direct_scope(s) for s in scopes]
    for _ in range(PASSES + 2):
        for name, (rec, load) in modes.items():
            app.recorder, app.load = rec, load
            times[name].append(await cpu_per_call(scopes, app))
            fast[name].append(cpu_per_fast_call(direct, app))
    figures = {
        "cpu_us_warm": {name: round(statistics.median(t), 1) for name, t in times.items()},
        "cpu_us_warm_fast_redirect": {
            name: round(statistics.median(t), 1) for name, t in fast.items()
        },
        "load_view": {
            "warm_mirrors": len(view.warm),
            "held_back": len(view.factors),
            "held_back_entirely": sum(1 for f in view.factors.values() if f == 0.0),
            "rate": rate,
        },
    }
    return figures, view


def per_item(items: list[Any], fn: Callable[[Any], object]) -> float:
    started = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - started) / len(items) * 1e6


async def measure(
    app: Dispatcher, scopes: list[dict[str, Any]], profile: bool, rate: float
) -> dict[str, Any]:
    holder = app.holder
    recorder = app.recorder
    cold = await per_call(scopes, app)  # with the recorders: they feed the load estimate
    redirected_cold = sum(
        1 for s in scopes if holder.current.lookup(normalize_path(s["path"])) is not None
    )
    modes, view = await server_like(app, scopes, redirected_cold, rate)
    app.recorder, app.load = None, None
    warm = statistics.median([await per_call(scopes, app) for _ in range(PASSES)])
    index = holder.current
    paths = [normalize_path(s["path"]) for s in scopes]
    contexts = [app.context(s, index)[:2] for s in scopes]
    positions = [index.lookup(p) for p in paths]
    triples = [
        (pos, profile, ctx)
        for pos, (ctx, profile) in zip(positions, contexts, strict=True)
        if pos is not None
    ]
    rng = random.Random(1)
    now = time.time()

    def pick(t: tuple[int, Any, Any]) -> object:
        return index.fast_pick(t[0], t[1], rng, now)

    picks = [pick(t) for t in triples]
    stages = {
        "path": statistics.median(
            per_item(scopes, lambda s: normalize_path(s["path"])) for _ in range(PASSES)
        ),
        "context": statistics.median(
            per_item(scopes, lambda s: app.context(s, index)) for _ in range(PASSES)
        ),
        "lookup": statistics.median(per_item(paths, index.lookup) for _ in range(PASSES)),
        "fast_pick": statistics.median(per_item(triples, pick) for _ in range(PASSES)),
    }
    found = sum(p is not None for p in positions)
    redirected = sum(p is not None for p in picks)
    if profile:
        app.recorder, app.load = recorder, view
        profiler = cProfile.Profile()
        profiler.enable()
        await per_call(scopes, app)
        profiler.disable()
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)
    return {
        **modes,
        "dispatcher_cold_us": round(cold, 1),
        "dispatcher_warm_us": round(warm, 1),
        "stages_warm_us": {k: round(v, 1) for k, v in stages.items()},
        "found": found,
        "redirected_to_mirror": redirected,
        "profiles_cached": len(index._profiles),
    }


def bench_settings(workdir: Path, geo: GeoData) -> Settings:
    """The settings of the in-process benchmarks: the synthetic install in ``workdir``,
    requests arriving through a proxy on 127.0.0.1."""
    return Settings(
        database_url=f"sqlite:///{workdir / 'mirrorhub.db'}",
        geoip_city_db=geo.city_db,
        geoip_asn_db=geo.asn_db,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
        origin_url="http://origin.example.org/",
    )


async def build_app(workdir: Path, settings: Settings) -> Dispatcher:
    """The app's dispatcher (with its recorders), holding an index built from the database."""
    engine = create_engine(settings.database_url)
    try:
        async with session_factory(engine)() as session:
            source = await index_load.load_index_source(session)
    finally:
        await engine.dispose()
    app = create_app(settings, rng=random.Random(1))
    app.holder.current = build_index(source, index_config(settings))
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--mirrors", type=int, default=200)
    parser.add_argument("--clients", type=int, default=5_000)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--profile", action="store_true", help="print a cProfile listing")
    parser.add_argument(
        "--load-rate",
        type=float,
        default=10_000.0,
        help="requests/s the load view assumes for this request mix (see the docstring)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "hotpath.json")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-hotpath-"))
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
        scopes = [
            scope_for(request_path(rng.choice(stats.redirectable)), rng.choice(clients))
            for _ in range(args.samples)
        ]
        settings = bench_settings(workdir, geo)
        app = asyncio.run(build_app(workdir, settings))
        figures = asyncio.run(measure(app, scopes, args.profile, args.load_rate))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result = {
        "benchmark": "hotpath",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "files": args.files,
            "mirrors": args.mirrors,
            "diffs": stats.diffs,
            "clients": args.clients,
            "samples": args.samples,
        },
        **figures,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "setup"}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
