"""The hot path's recorders, this checkout's against another's, in one process.

    git worktree add /tmp/base COMMIT
    .venv/bin/python -m bench.recorders_ab --baseline /tmp/base [--passes 11]

Separate runs of bench/hotpath.py from two checkouts are hard to compare on a shared,
busy machine: the same code measured 7-15 us for its recorders from one run to the next.
Here one app (the request mix, index and load view of bench/hotpath.py) runs the same
10,000 requests in alternating passes (CPU time) with no recorder, with the recorders
``create_app`` gives it, and with the baseline checkout's statistics counter, load recorder,
metrics recorder and its fused ``HotRecorder`` (``web/recording.py``; ``_fan_out`` of
``web/app.py`` before that existed), loaded from its files and fed their own copy of the load
view. Only those files come from the baseline: the dispatcher is this checkout's.
Prints the fastest and the median pass per mode, and the recorders' share (minus "alone").
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import importlib.util
import json
import random
import shutil
import statistics
import sys
import tempfile
from pathlib import Path
from types import ModuleType
from typing import Any

if __package__ in (None, ""):  # run as a script: make "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from prometheus_client import CollectorRegistry

from bench.hotpath import bench_settings, build_app, cpu_per_call, scope_for
from bench.synth import build_database, client_addresses, request_path, write_geoip
from mirrorhub.load import LoadEstimator, make_view
from mirrorhub.web.redirect import Dispatcher


def load_module(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def baseline_recorder(base: Path, app: Dispatcher, view: Any) -> Any:
    state = app.inner.state.mirrorhub  # type: ignore[attr-defined]
    settings = state.settings
    pkg = base / "mirrorhub"
    counter = load_module("baseline_counter", pkg / "stats" / "counter.py")
    loadsync = load_module("baseline_loadsync", pkg / "web" / "loadsync.py")
    metrics = load_module("baseline_metrics", pkg / "web" / "metrics.py")
    app_module = load_module("baseline_app", pkg / "web" / "app.py")
    load = loadsync.LoadRecorder(state, LoadEstimator(window=settings.load_window_seconds))
    load.view = view
    stats = counter.StatsCounter(
        state.holder,
        range_window=settings.stats_range_window_seconds,
        max_clients=settings.stats_range_clients,
        clock=state.clock,
    )
    redirects = metrics.RedirectMetrics(CollectorRegistry())
    if (pkg / "web" / "recording.py").exists():
        # Built directly: combine() tells recorders apart by this checkout's classes.
        recording = load_module("baseline_recording", pkg / "web" / "recording.py")
        return recording.HotRecorder(stats, load, redirects)
    # The order create_app registers them in.
    return app_module._fan_out([load, stats, redirects])


async def compare(app: Dispatcher, scopes: list[dict[str, Any]], base: Path, passes: int) -> Any:
    state = app.inner.state.mirrorhub  # type: ignore[attr-defined]
    current = app.recorder
    await cpu_per_call(scopes, app)  # warm: contexts, profiles, bands; feeds the estimate
    recorders = state.extras.get("recorders", [])
    estimate = next((r.estimate for r in recorders if hasattr(r, "estimate")), None)
    estimator = state.extras["load_estimator"]
    mbps = estimate() if estimate is not None else estimator.mbps()
    index = app.holder.current
    capacities = {s.mirror.name: s.mirror.capacity for s in index.slots}
    scale = 10_000 * estimator.window / len(scopes)  # as bench/hotpath.py: 10,000 req/s
    view = make_view(
        {m: v * scale for m, v in mbps.items()}, {}, capacities, window=estimator.window
    )
    for r in recorders:
        if hasattr(r, "view"):
            r.view = copy.deepcopy(view)
    modes = {
        "alone": None,
        "current": current,
        "baseline": baseline_recorder(base, app, copy.deepcopy(view)),
    }
    times: dict[str, list[float]] = {name: [] for name in modes}
    for _ in range(passes):
        for name, recorder in modes.items():
            app.recorder = recorder
            times[name].append(await cpu_per_call(scopes, app))
    out = {}
    for label, agg in (("fastest", min), ("median", statistics.median)):
        figures = {name: agg(t) for name, t in times.items()}
        out[label] = {
            name: {"us": round(v, 2), "recorders_us": round(v - figures["alone"], 2)}
            for name, v in figures.items()
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout to compare")
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--passes", type=int, default=11)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-recorders-"))
    try:
        geo = write_geoip(workdir)
        stats = build_database(
            workdir / "mirrorhub.db", files=args.files, mirrors=200, blocks=geo.blocks,
            progress=False,
        )  # fmt: skip
        rng = random.Random(args.seed)
        clients = client_addresses(geo.blocks, 5_000)
        scopes = [
            scope_for(request_path(rng.choice(stats.redirectable)), rng.choice(clients))
            for _ in range(10_000)
        ]
        settings = bench_settings(workdir, geo)
        app = asyncio.run(build_app(workdir, settings))
        result = asyncio.run(compare(app, scopes, args.baseline, args.passes))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
