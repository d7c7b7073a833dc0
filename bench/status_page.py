"""Status page: server-side time of /-/status with 500 mirrors, cold and cached.

    .venv/bin/python -m bench.status_page [--mirrors 500] [--files 100000] \
        [--probe-interval 60] [--requests 50]

A synthetic SQLite database (bench/synth.py: mirrors, origin files, a few percent of diffs
per mirror) gets a probe history: every ``--probe-interval`` seconds for the last 24 h, one
row per scheme a mirror offers (2 % failures, every failure for the mirrors synth marks
down), plus 13 days of hourly downsampled rows before that, as retention leaves them.

The app is ``create_app(settings)`` driven in-process through httpx's ASGI transport (no
socket, no server), so the times are the dispatcher's own work plus a little client overhead:

* ``cold_ms``: the first GET /-/status of a fresh app: every status query (mirrors, coverage
  over the files and diffs, 24 h of probe buckets) + building the model + the template;
* ``cached_ms``: later GETs within the cache TTL (model reused, template rendered), median
  and p95, also for filtered/sorted views and the JSON;
* ``rebuild_ms``: a model rebuild once the TTL ran out, the index version unchanged: what the
  background refresh costs every few seconds (coverage reused, last 2 h of probes re-read);
* ``coverage_ms``: the coverage queries alone (they run again only when the version moves).

Not a test: numbers depend on the machine. Results: bench/results/status_page.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, insert, select

from bench import synth
from mirrorhub.db.models import MirrorRow, ProbeResultRow
from mirrorhub.settings import Settings
from mirrorhub.status_query import StatusSource, load_mirrors
from mirrorhub.web.app import create_app

RESULTS = Path(__file__).resolve().parent / "results"
DAY = 86_400


def add_probe_history(path: Path, interval: float, seed: int = 5) -> int:
    rng = random.Random(seed)
    now = time.time()
    engine = synth._sync_engine(path)
    rows = 0
    with engine.begin() as conn:
        mirrors = conn.execute(select(MirrorRow.id, MirrorRow.http_url, MirrorRow.https_url))
        for mirror_id, http_url, https_url in mirrors.all():
            schemes = [s for s, u in (("http", http_url), ("https", https_url)) if u]
            down = mirror_id % 61 == 0  # synth's down mirrors
            batch: list[dict[str, Any]] = []
            t = now - DAY
            while t < now:
                for scheme in schemes:
                    ok = not down and rng.random() > 0.02
                    batch.append(
                        {
                            "mirror_id": mirror_id,
                            "scheme": scheme,
                            "at": datetime.fromtimestamp(t, UTC),
                            "ok": ok,
                            "status": 200 if ok else None,
                            "latency_ms": rng.uniform(5, 200) if ok else None,
                            "error": "" if ok else "timeout",
                            "samples": 1,
                        }
                    )
                t += interval
            hour = (now - DAY) // 3600 * 3600
            for h in range(1, 13 * 24 + 1):
                for scheme in schemes:
                    batch.append(
                        {
                            "mirror_id": mirror_id,
                            "scheme": scheme,
                            "at": datetime.fromtimestamp(hour - h * 3600, UTC),
                            "ok": not down,
                            "status": 200,
                            "latency_ms": 50.0,
                            "error": "",
                            "samples": int(3600 / interval),
                        }
                    )
            conn.execute(insert(ProbeResultRow), batch)
            rows += len(batch)
    engine.dispose()
    return rows


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


async def measure(path: Path, requests: int) -> dict[str, Any]:
    settings = Settings(database_url=f"sqlite:///{path}")
    app = create_app(settings)
    state = app.inner.state.mirrorhub  # type: ignore[attr-defined]
    transport = httpx.ASGITransport(app=app)
    out: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://bench") as client:
        t0 = time.perf_counter()
        r = await client.get("/-/status")
        out["cold_ms"] = _ms(time.perf_counter() - t0)
        assert r.status_code == 200, r.status_code
        out["page_kb"] = round(len(r.content) / 1024, 1)
        out["rows_on_page"] = r.text.count('<td class="num" data-sort') // 2

        async def timed(url: str) -> dict[str, float]:
            times = []
            for _ in range(requests):
                t = time.perf_counter()
                resp = await client.get(url)
                times.append(time.perf_counter() - t)
                assert resp.status_code == 200
            times.sort()
            return {
                "median_ms": _ms(statistics.median(times)),
                "p95_ms": _ms(times[int(len(times) * 0.95) - 1]),
            }

        cache = state.extras["status_cache"]
        cache.ttl = 3600.0  # measure the cached path only
        out["cached"] = {
            "/-/status": await timed("/-/status"),
            "/-/status?sort=coverage&order=desc": await timed("/-/status?sort=coverage&order=desc"),
            "/-/status?status=down": await timed("/-/status?status=down"),
            "/-/api/status": await timed("/-/api/status"),
            "/-/map.svg": await timed("/-/map.svg"),
        }
        out["cached_ms"] = out["cached"]["/-/status"]["median_ms"]
        rebuilds = []
        for _ in range(5):
            t = time.perf_counter()
            await cache.source.build()
            rebuilds.append(time.perf_counter() - t)
        out["rebuild_ms"] = _ms(statistics.median(rebuilds))
    fresh = StatusSource(state.sessions)
    t = time.perf_counter()
    await fresh.build()
    out["full_build_ms"] = _ms(time.perf_counter() - t)
    async with state.sessions() as session:
        from mirrorhub.status_query import load_confirmations, load_differing, load_histograms

        mirrors = [m for m in await load_mirrors(session) if m.enabled]
        t = time.perf_counter()
        await load_histograms(session, {m.scope for m in mirrors})
        await load_differing(session, mirrors)
        await load_confirmations(session)
        out["coverage_ms"] = _ms(time.perf_counter() - t)
        out["probe_rows"] = int(await session.scalar(select(func.count(ProbeResultRow.id))) or 0)
    await state.engine.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mirrors", type=int, default=500)
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--probe-interval", type=float, default=60.0)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--output", type=Path, default=RESULTS / "status_page.json")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mh-bench-status-") as tmp:
        path = Path(tmp) / "status.db"
        print(f"generating {args.mirrors} mirrors, {args.files:,} files ...", flush=True)
        stats = synth.build_database(
            path, files=args.files, mirrors=args.mirrors, blocks=synth.make_blocks()
        )
        t = time.perf_counter()
        probe_rows = add_probe_history(path, args.probe_interval)
        print(f"  {probe_rows:,} probe rows in {time.perf_counter() - t:.1f} s", flush=True)
        result = asyncio.run(measure(path, args.requests))
    doc = {
        "benchmark": "status_page",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "command": "python -m bench.status_page "
        + f"--mirrors {args.mirrors} --files {args.files} "
        + f"--probe-interval {args.probe_interval:g} --requests {args.requests}",
        "mirrors": args.mirrors,
        "files": args.files,
        "diffs": stats.diffs,
        "probe_interval_s": args.probe_interval,
        **result,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
