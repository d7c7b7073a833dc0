"""Index build: load time, build time and memory at 100,000 and 1,000,000 files.

    .venv/bin/python -m bench.index_build [--sizes 100000,1000000] [--mirrors 200]

For each size, a synthetic SQLite database (bench/synth.py: 200 mirrors, a few percent of
files differing per mirror) is generated once in a temporary directory. Then a fresh
subprocess per size imports the dispatcher (``mirrorhub.web.app``), and measures:

* ``load_s``: ``repositories.load_index_source`` over an aiosqlite session (what the
  refresher does);
* ``build_s``: ``build_index(source, config)``;
* RSS (``VmRSS`` of /proc/self/status) after the imports, after loading, after building,
  and after dropping the source (``rss_holding_index_mb``: what a dispatcher holding that
  index uses), plus the peak (``VmHWM``).

Not a test: numbers depend on the machine. Results: bench/results/index_build.json.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"
CHILD_TIMEOUT = 600


def status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def child(database: Path) -> dict[str, Any]:
    """Runs in a fresh interpreter: measure one load and one build."""
    from mirrorhub.db import repositories
    from mirrorhub.db.session import create_engine, session_factory
    from mirrorhub.index import IndexSource, build_index
    from mirrorhub.settings import Settings
    from mirrorhub.web import app as _app  # everything a dispatcher imports

    gc.collect()
    out: dict[str, Any] = {"rss_start_mb": status_mb("VmRSS")}

    async def load() -> IndexSource:
        engine = create_engine(f"sqlite:///{database}")
        try:
            async with session_factory(engine)() as session:
                return await repositories.load_index_source(session)
        finally:
            await engine.dispose()

    started = time.perf_counter()
    source = asyncio.run(load())
    out["load_s"] = round(time.perf_counter() - started, 2)
    out["rss_after_load_mb"] = status_mb("VmRSS")
    out["files"] = len(source.files)
    out["diffs"] = len(source.diffs)
    out["mirrors"] = len(source.mirrors)

    config = _app.index_config(Settings())
    started = time.perf_counter()
    index = build_index(source, config)
    out["build_s"] = round(time.perf_counter() - started, 2)
    out["rss_after_build_mb"] = status_mb("VmRSS")
    del source
    gc.collect()
    out["rss_holding_index_mb"] = status_mb("VmRSS")
    out["rss_peak_mb"] = status_mb("VmHWM")
    out["files_with_diffs"] = sum(b is not None for b in index.bad)
    out["directories"] = len(index.dirs)
    return out


def measure(database: Path) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", str(database)],
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child failed:\n{proc.stdout}\n{proc.stderr}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated file counts")
    parser.add_argument("--mirrors", type=int, default=200)
    parser.add_argument("--diff-percent", type=float, default=2.5, help="mean per mirror")
    parser.add_argument("--output", type=Path, default=RESULTS / "index_build.json")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(args.child)))
        return 0

    from bench.synth import build_database, make_blocks

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-index-"))
    rows = []
    try:
        for files in sizes:
            database = workdir / f"files-{files}.db"
            print(f"generating {files:,} files x {args.mirrors} mirrors ...", flush=True)
            stats = build_database(
                database,
                files=files,
                mirrors=args.mirrors,
                blocks=make_blocks(),
                diff_percent=args.diff_percent,
            )
            size_mb = os.path.getsize(database) / 2**20
            print(
                f"  {stats.diffs:,} diffs, {size_mb:.0f} MB, generated in {stats.seconds:.0f} s",
                flush=True,
            )
            result = measure(database)
            result.update(generate_s=round(stats.seconds, 1), database_mb=round(size_mb, 1))
            rows.append(result)
            print(
                f"  load {result['load_s']:.2f} s, build {result['build_s']:.2f} s, "
                f"RSS {result['rss_start_mb']:.0f} -> {result['rss_after_load_mb']:.0f} -> "
                f"{result['rss_after_build_mb']:.0f} MB, holding the index "
                f"{result['rss_holding_index_mb']:.0f} MB, peak {result['rss_peak_mb']:.0f} MB",
                flush=True,
            )
            database.unlink()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    output = {
        "benchmark": "index_build",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "mirrors": args.mirrors,
        "diff_percent_mean": args.diff_percent,
        "results": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(output, indent=2) + "\n")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
