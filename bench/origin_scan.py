"""Time the origin scan on 100,000 small files with SQLite: first scan, then a no-change rescan.

    .venv/bin/python bench/origin_scan.py [FILES]

Not a test: numbers depend on the machine. Everything lives in a temporary directory.
"""

from __future__ import annotations

import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from mirrorhub.db.migrate import upgrade_engine
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.workers.origin_scan import OriginScanResult, scan_origin


def make_tree(root: Path, files: int, per_dir: int = 1000) -> None:
    for i in range(files):
        d = root / "pub" / f"d{i // per_dir:04d}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        with open(d / f"file-{i:07d}.bin", "wb") as f:
            f.write(b"%d\n" % i * 20)


def line(label: str, r: OriginScanResult) -> str:
    return (
        f"{label:<16} {r.duration:7.2f} s  seen={r.seen:,} new={r.new:,} changed={r.changed:,} "
        f"unchanged={r.unchanged:,} hashed={r.bytes_hashed:,} B"
    )


async def run(files: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "origin"
        started = time.perf_counter()
        make_tree(root, files)
        print(f"created {files:,} files in {time.perf_counter() - started:.2f} s")
        engine = create_engine(f"sqlite:///{tmp}/bench.db")
        await upgrade_engine(engine)
        sessions = session_factory(engine)
        try:
            print(line("first scan", await scan_origin(sessions, root)))
            print(line("no-change rescan", await scan_origin(sessions, root)))
            for i in range(0, files, 100):  # touch 1 %
                p = root / "pub" / f"d{i // 1000:04d}" / f"file-{i:07d}.bin"
                os.utime(p, (1, 1))
            print(line("1 % touched", await scan_origin(sessions, root)))
        finally:
            await engine.dispose()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"peak RSS {peak} MiB")


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000))
