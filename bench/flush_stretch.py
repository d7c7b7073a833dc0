"""How long one statistics flush holds the event loop, on a SQLite file.

    .venv/bin/python -m bench.flush_stretch [--files 20000] [--rows 10000] [--flushes 6]

On a SQLite file the flush runs on the dispatcher's event loop (mirrorhub/stats/
sqlite_writer.py), so every stretch between two turns of the loop delays the redirects that
arrive meanwhile: what the p99 under wrk feels. Builds the synthetic install of
bench/hotpath.py, freezes the heap as the server does after an index build, keeps one pooled
connection of the app's engine open (as the server's index checks do: otherwise closing the
flusher's connection checkpoints the whole WAL), then counts ``--rows`` downloads over random
files and flushes, ``--flushes`` times. A task that only yields records the gaps between its
turns. Reports per flush: wall time, the longest stretch, the sum of stretches over 0.2 ms
and the number of turns (the first flush, which also reads the schema, is left out).
Results: bench/results/flush_stretch.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
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

from sqlalchemy import text

from bench.hotpath import bench_settings, build_app
from bench.synth import build_database, write_geoip
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.stats import flush as flush_module
from mirrorhub.stats.counter import StatsCounter
from mirrorhub.stats.flush import StatsFlusher

RESULTS = Path(__file__).resolve().parent / "results"


async def one_flush(flusher: StatsFlusher) -> dict[str, float]:
    gaps: list[float] = []
    done = False

    async def ticker() -> None:
        last = time.perf_counter()
        while not done:
            await asyncio.sleep(0)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    started = time.perf_counter()
    ok = await flusher.flush()
    wall = time.perf_counter() - started
    done = True
    await task
    if not ok:
        raise SystemExit(f"flush failed: {flusher.last_error}")
    return {
        "wall_ms": round(wall * 1e3, 1),
        "longest_ms": round(max(gaps) * 1e3, 2),
        "held_ms": round(sum(g for g in gaps if g > 0.0002) * 1e3, 1),
        "turns": len(gaps),
    }


async def measure(workdir: Path, settings: Any, rows: int, flushes: int) -> list[dict[str, float]]:
    app = await build_app(workdir, settings)
    gc.collect()
    gc.freeze()  # as mirrorhub/index/refresh.py does after a full build
    engine = create_engine(settings.database_url)
    sessions = session_factory(engine)
    try:
        async with sessions() as session:  # one pooled connection stays open
            await session.execute(text("SELECT 1"))
        counter = StatsCounter(app.holder)
        flusher = StatsFlusher(counter, sessions)
        index = app.holder.current
        rng = random.Random(1)
        countries = ["DE", "FR", "US", "JP", None]
        out = []
        for _ in range(flushes + 1):
            for _ in range(rows):
                pos = rng.randrange(len(index))
                mirror = f"mirror{rng.randrange(200):03d}"
                counter.count(pos, mirror, rng.choice(countries), index.sizes[pos])
            out.append(await one_flush(flusher))
        return out[1:]
    finally:
        await engine.dispose()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--mirrors", type=int, default=200)
    parser.add_argument("--rows", type=int, default=10_000, help="downloads counted per flush")
    parser.add_argument("--flushes", type=int, default=6)
    parser.add_argument("--json-rows", type=int, default=flush_module.JSON_ROWS)
    parser.add_argument("--output", type=Path, default=RESULTS / "flush_stretch.json")
    args = parser.parse_args(argv)
    flush_module.JSON_ROWS = args.json_rows
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-flush-"))
    try:
        geo = write_geoip(workdir)
        build_database(
            workdir / "mirrorhub.db",
            files=args.files,
            mirrors=args.mirrors,
            blocks=geo.blocks,
            progress=False,
        )
        runs = asyncio.run(measure(workdir, bench_settings(workdir, geo), args.rows, args.flushes))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for run in runs:
        print(
            f"flush {run['wall_ms']:7.1f} ms wall, longest stretch {run['longest_ms']:6.2f} ms, "
            f"held {run['held_ms']:6.1f} ms in {run['turns']} turns"
        )
    result = {
        "benchmark": "flush_stretch",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": {
            "files": args.files,
            "rows_counted_per_flush": args.rows,
            "json_rows": args.json_rows,
        },
        "flushes": runs,
        "median": {k: statistics.median(r[k] for r in runs) for k in runs[0]},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["median"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
