"""Index build and incremental update at 100,000 and 1,000,000 files.

    .venv/bin/python -m bench.index_build [--sizes 100000,1000000] [--mirrors 200]
        [--changes 10000] [--database PATH] [--variants process,in-process] [--reps 1]

For each size, a synthetic SQLite database (bench/synth.py: 200 mirrors, a few percent of
files differing per mirror) is generated once in a temporary directory (or ``--database``
names one made earlier; it is upgraded to the current schema). Then a fresh subprocess per
size imports the dispatcher (``mirrorhub.web.app``) and measures what a dispatcher does:

* ``build_s``: ``DatabaseLoader.build``, the full build from the database (reading files
  and grouped differences page by page, filling the index in a thread); ``diff_source``
  says how the differences were read: by a child process (``process``, SQLite only, see
  mirrorhub/db/diff_reader.py) or ``in-process``;
* RSS (``VmRSS`` of /proc/self/status) after the imports and holding the index, and the
  peak (``VmHWM``); ``rss_before_delta_mb`` / ``rss_after_delta_mb`` around the update (the
  change itself is written by another process, as a worker would);
* ``delta_s``: ``refresh_once`` after ``--changes`` files changed in one committed version
  (half an origin change of files, half a mirror's new difference set), read from the
  change log and written into the live index; ``max_pause_ms``: how late a 1 ms timer
  fired at worst meanwhile (what a redirect could have waited), with ``idle_pause_ms`` the
  same figure over one idle second before, for comparison (the machine's own noise);
* ``build_max_pause_ms``: the same timer's worst lateness over one more full build
  (``ticked_build_s``, after the update; the timer's wake-ups cost the build a little).

``--variants``: ``process`` is the loader as a dispatcher makes it (a child process reads
the differences on SQLite from 100,000 files on), ``in-process`` forces the previous path
(``process_min_files=None``); each repetition (``--reps``) runs every variant in turn on a
fresh copy of the same database, so variants are compared in the same session.

``--postgresql`` copies the same synthetic data into a scratch database on the local
PostgreSQL server (127.0.0.1:5432, created and dropped by the benchmark) and measures there.

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


PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_TABLES = (
    "mirrors", "mirror_state", "origin_files", "mirror_file_diffs", "index_version",
)  # fmt: skip


def copy_to_postgresql(sqlite_path: Path, name: str) -> str:
    """A new PostgreSQL database ``name`` holding the SQLite database's index tables."""
    import sqlite3

    import asyncpg

    from mirrorhub.db.migrate import upgrade

    async def admin(sql: str) -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(admin(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    upgrade(url)

    async def copy() -> None:
        source = sqlite3.connect(sqlite_path)
        conn = await asyncpg.connect(url)
        try:
            for table in PG_TABLES:
                cursor = source.execute(f"SELECT * FROM {table}")
                columns = [d[0] for d in cursor.description]
                types = dict(
                    await conn.fetch(
                        "SELECT column_name, data_type FROM information_schema.columns "
                        "WHERE table_name = $1",
                        table,
                    )
                )
                await conn.execute(f"TRUNCATE {table} CASCADE")
                while rows := cursor.fetchmany(50_000):
                    records = [_pg_values(row, columns, types) for row in rows]
                    await conn.copy_records_to_table(table, records=records, columns=columns)
            await conn.execute("SELECT setval(pg_get_serial_sequence('origin_files', 'id'), "
                               "(SELECT max(id) FROM origin_files))")  # fmt: skip
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
            source.close()

    asyncio.run(copy())
    return url


def _pg_values(row: tuple[Any, ...], columns: list[str], types: dict[str, str]) -> tuple[Any, ...]:
    out = []
    for value, column in zip(row, columns, strict=True):
        kind = types[column]
        if value is not None and kind == "boolean":
            value = bool(value)
        elif value is not None and kind.startswith("timestamp"):
            value = datetime.fromisoformat(value).replace(tzinfo=UTC)
        out.append(value)
    return tuple(out)


def drop_postgresql(name: str) -> None:
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(PG_ADMIN_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(run())


VARIANTS = ("process", "in-process")


def child(database: str, changes: int, variant: str = "process") -> dict[str, Any]:
    """Runs in a fresh interpreter: one full build, then one incremental update."""
    from mirrorhub.db.index_load import DatabaseLoader
    from mirrorhub.db.session import create_engine, session_factory
    from mirrorhub.index import IndexHolder, empty_index, refresh_once
    from mirrorhub.settings import Settings
    from mirrorhub.web import app as _app  # everything a dispatcher imports

    gc.collect()
    out: dict[str, Any] = {"rss_start_mb": status_mb("VmRSS")}
    config = _app.index_config(Settings())

    async def run() -> None:
        url = database if "://" in database else f"sqlite:///{database}"
        engine = create_engine(url)
        sessions = session_factory(engine)
        if variant == "in-process":
            loader = DatabaseLoader(sessions, process_min_files=None)
        else:
            loader = DatabaseLoader(sessions)
        holder = IndexHolder(empty_index(config))
        try:
            started = time.perf_counter()
            await refresh_once(holder, loader, config)
            out["build_s"] = round(time.perf_counter() - started, 2)
            out["variant"], out["diff_source"] = variant, loader.diff_source
            index = holder.current
            gc.collect()
            out["rss_holding_index_mb"] = round(status_mb("VmRSS"))
            out["rss_peak_mb"] = round(status_mb("VmHWM"))
            out["files"] = len(index)
            out["mirrors"] = len(index.slots)
            out["files_with_diffs"] = sum(b is not None for b in index.bad)
            out["directories"] = len(list(index.dirs))
            # A worker writes the change, in its own process: its memory is not the
            # dispatcher's.
            changed = await asyncio.to_thread(_write_changes_elsewhere, url, changes)
            out["changed_files"] = changed
            gc.collect()
            out["rss_before_delta_mb"] = round(status_mb("VmRSS"))
            pauses: list[float] = []
            ticking = asyncio.create_task(_ticker(pauses))
            await asyncio.sleep(1.0)
            out["idle_pause_ms"] = round(max(pauses) * 1000, 1)
            pauses.clear()
            started = time.perf_counter()
            await refresh_once(holder, loader, config)
            out["delta_s"] = round(time.perf_counter() - started, 3)
            ticking.cancel()
            out["max_pause_ms"] = round(max(pauses) * 1000, 1)
            out["applied_in_place"] = holder.current is index and holder.counts.deltas == 1
            out["rss_after_delta_mb"] = round(status_mb("VmRSS"))
            # one more full build with the timer running: does the loop keep answering?
            pauses.clear()
            ticking = asyncio.create_task(_ticker(pauses))
            started = time.perf_counter()
            await loader.build(config, time.time)
            out["ticked_build_s"] = round(time.perf_counter() - started, 2)
            ticking.cancel()
            out["build_max_pause_ms"] = round(max(pauses) * 1000, 1)
        finally:
            await engine.dispose()

    asyncio.run(run())
    return out


async def _ticker(pauses: list[float]) -> None:
    """How late a 1 ms timer fires, again and again: the event loop's pauses. (Not a busy
    loop: one would hog the GIL and slow down the database driver's thread it waits for.)"""
    while True:
        started = time.perf_counter()
        await asyncio.sleep(0.001)
        pauses.append(time.perf_counter() - started - 0.001)


async def _change_files(sessions: Any, count: int) -> int:
    """Commit one version that changes ``count`` files: half of them get a new origin
    version, the other half a new difference on the first mirror."""
    import random

    from sqlalchemy import delete, insert, select, update

    from mirrorhub.db.models import MirrorFileDiffRow, MirrorRow, OriginFileRow
    from mirrorhub.db.repositories import bump_version

    rng = random.Random(5)
    async with sessions() as session, session.begin():
        ids = list(await session.scalars(select(OriginFileRow.id)))
        mirror_id = await session.scalar(select(MirrorRow.id).order_by(MirrorRow.id))
        picked = rng.sample(ids, min(count, len(ids)))
        origin, mirror = picked[: len(picked) // 2], picked[len(picked) // 2 :]
        for start in range(0, len(origin), 500):
            chunk = origin[start : start + 500]
            await session.execute(
                update(OriginFileRow)
                .where(OriginFileRow.id.in_(chunk))
                .values(size=OriginFileRow.size + 1, changed_at=time.time())
            )
        for start in range(0, len(mirror), 500):
            chunk = mirror[start : start + 500]
            await session.execute(
                delete(MirrorFileDiffRow).where(
                    MirrorFileDiffRow.mirror_id == mirror_id, MirrorFileDiffRow.file_id.in_(chunk)
                )
            )
            await session.execute(
                insert(MirrorFileDiffRow),
                [{"mirror_id": mirror_id, "file_id": f, "kind": "missing"} for f in chunk],
            )
        await bump_version(session, files=picked)
    return len(picked)


def _write_changes_elsewhere(url: str, changes: int) -> int:
    proc = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--write-changes", url,
         "--changes", str(changes)],
        capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    return int(proc.stdout.split()[-1])


def _write_changes(url: str, changes: int) -> int:
    from mirrorhub.db.session import create_engine, session_factory

    async def run() -> int:
        engine = create_engine(url)
        try:
            return await _change_files(session_factory(engine), changes)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def measure(database: Path | str, changes: int, variant: str) -> dict[str, Any]:
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve()),
            "--child",
            str(database),
            "--changes",
            str(changes),
            "--variants",
            variant,
        ],
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
    parser.add_argument("--changes", type=int, default=10_000, help="files changed at once")
    parser.add_argument("--database", type=Path, help="an earlier synthetic database (copied)")
    parser.add_argument("--output", type=Path, default=RESULTS / "index_build.json")
    parser.add_argument("--postgresql", action="store_true", help="measure on PostgreSQL")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated, each rep in turn"
    )
    parser.add_argument("--reps", type=int, default=1, help="repetitions of every variant")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--write-changes", help=argparse.SUPPRESS)  # a database URL
    args = parser.parse_args(argv)
    variants = [v for v in args.variants.split(",") if v]
    if unknown := set(variants) - set(VARIANTS):
        parser.error(f"unknown variants {sorted(unknown)}")
    if args.write_changes is not None:
        print(_write_changes(args.write_changes, args.changes))
        return 0
    if args.child is not None:
        print(json.dumps(child(args.child, args.changes, variants[0])))
        return 0

    from bench.synth import build_database, make_blocks
    from mirrorhub.db.migrate import upgrade

    sizes = [int(s.replace("_", "")) for s in args.sizes.split(",") if s]
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-index-"))
    rows = []
    try:
        for files in sizes:
            pristine = workdir / f"files-{files}.db"
            generated = None
            if args.database is not None:
                shutil.copy(args.database, pristine)
                upgrade(f"sqlite:///{pristine}")
            else:
                print(f"generating {files:,} files x {args.mirrors} mirrors ...", flush=True)
                stats = build_database(
                    pristine,
                    files=files,
                    mirrors=args.mirrors,
                    blocks=make_blocks(),
                    diff_percent=args.diff_percent,
                )
                generated = round(stats.seconds, 1)
            size_mb = os.path.getsize(pristine) / 2**20
            url = None
            if args.postgresql:
                name = f"mirrorhub_bench_{os.getpid()}"
                started = time.perf_counter()
                url = copy_to_postgresql(pristine, name)
                print(f"  copied to PostgreSQL in {time.perf_counter() - started:.0f} s")
            try:
                for rep in range(args.reps):
                    for variant in variants:
                        if url is None:  # each run changes files: start from the same data
                            database: Path | str = workdir / "run.db"
                            shutil.copy(pristine, database)
                        else:
                            database = url
                        load = round(os.getloadavg()[0], 2)  # other work on the machine
                        result = measure(database, args.changes, variant)
                        result["load_average_before"] = load
                        result["database"] = "sqlite" if url is None else "postgresql"
                        result.update(rep=rep, generate_s=generated, database_mb=round(size_mb, 1))
                        rows.append(result)
                        print(
                            f"  {result['files']:,} files, {variant} (differences read "
                            f"{result['diff_source']}): full build {result['build_s']:.2f} s, "
                            f"holding the index {result['rss_holding_index_mb']} MB (peak "
                            f"{result['rss_peak_mb']} MB); "
                            f"{result['changed_files']:,} changed files applied in "
                            f"{result['delta_s']:.3f} s, longest event-loop pause "
                            f"{result['max_pause_ms']} ms; full build with the timer "
                            f"{result['ticked_build_s']} s, longest pause "
                            f"{result['build_max_pause_ms']} ms",
                            flush=True,
                        )
                        last = rep == args.reps - 1 and variant == variants[-1]
                        if url is None:
                            database.unlink()  # type: ignore[union-attr]
                        elif not last:  # undo the run's changes: the next starts from the same
                            drop_postgresql(name)
                            url = copy_to_postgresql(pristine, name)
            finally:
                if url is not None:
                    drop_postgresql(name)
            pristine.unlink()
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
