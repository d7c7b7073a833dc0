"""Worker benchmarks (issue 3): rsync listing parse, HTTP listing crawl, probe round, and the
time the running service takes to notice a dead mirror and an origin change.

    .venv/bin/python -m bench.workers                  # all four parts; about 7 minutes
    .venv/bin/python -m bench.workers --only rsync_parse --only probe_round
    .venv/bin/python -m bench.workers --reps 1         # detection: one repetition each

Parts (``--only`` names):

* ``rsync_parse``: 1,000,000 lines shaped like ``TZ=UTC rsync --list-only -r`` output
  (``%-10s %14s %s %s``, sizes grouped with ``,``) in memory, through
  ``parse_rsync_listing``; median of 3, each with the module's date caches cleared; and the same
  lines through ``str.split()`` as a floor measured in the same run.
* ``http_crawl``: 100,000 sparse files in 5,000 directories served by nginx autoindex on
  127.0.0.2 (``tests.servers.nginx_autoindex``), crawled by ``http_scan.crawl`` with default
  ``CrawlLimits``; pages/s and files/s, first and second crawl.
* ``probe_round``: 1,000 mirrors (one http endpoint each) in a temporary SQLite database: 800
  on 4 nginx servers serving the trace file, 100 on closed ports, 100 on a server that accepts
  and never answers; one ``probe_mirrors`` round with default settings (concurrency 100,
  connect 3 s, total 10 s), then a second round.
* ``detection``: ``mirrorhub serve`` with in-process workers and default settings, two nginx
  mirrors. (b) publish a new version of a file on the origin and on one mirror (trace file
  rewritten, origin last) until that mirror is chosen for the new version; (a) stop the other
  mirror's nginx until ``?json`` lists it as ``down``, then restart it until it is back.

Everything runs in a temporary directory and talks only to 127.0.0.0/8. Results are merged
into bench/results/workers.json (a part not run keeps its earlier figures).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make "bench" and "tests" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

RESULTS = Path(__file__).resolve().parent / "results"
PARTS = ("rsync_parse", "http_crawl", "probe_round", "detection")
T0 = 1_700_000_000


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


# --- 1. rsync listing parse -------------------------------------------------------------


def rsync_line(kind: str, size: int, mtime: int, name: str) -> str:
    perms = {"d": "drwxr-xr-x", "-": "-rw-r--r--", "l": "lrwxrwxrwx"}[kind]
    stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.gmtime(mtime))
    return f"{perms} {size:>14,} {stamp} {name}\n"


def rsync_listing(lines: int, seed: int = 3) -> list[str]:
    """A listing of a distribution-like tree: projects / versions / files, ~6 % directories.

    Names 20-90 characters, sizes log-uniform 100 B - 4 GB, mtimes over 2015-2024 to the
    second; 1 % of names hold spaces, 0.1 % an rsync ``\\#ooo`` escape.
    """
    rng = random.Random(seed)
    archs = ["amd64", "arm64", "i386", "ppc64el", "s390x", "riscv64", "all", "src"]
    exts = [".iso", ".tar.xz", ".tar.gz", ".deb", ".rpm", ".qcow2", ".zip", ".img.xz"]
    out = [rsync_line("d", 4096, T0, ".")]
    p = 0
    while len(out) < lines:
        project = f"pub/proj{p:03d}-{rng.choice(['linux', 'tools', 'desktop', 'server'])}"
        out.append(rsync_line("d", 4096, rng.randrange(1_420_000_000, T0), project))
        for v in range(rng.randrange(20, 60)):
            version = f"{project}/{v // 10}.{v % 10}.{rng.randrange(20)}"
            out.append(rsync_line("d", 4096, rng.randrange(1_420_000_000, T0), version))
            for f in range(rng.randrange(5, 30)):
                base = f"proj{p:03d}-{v}.{f}-{rng.choice(archs)}"
                roll = rng.random()
                if roll < 0.01:
                    base = f"release notes {base}"
                elif roll < 0.011:
                    base = f"caf\\#303\\#251-{base}"
                if rng.random() < 0.3:
                    base += "-" + "x" * rng.randrange(0, 40)
                size = int(10 ** rng.uniform(2, 9.6))
                out.append(
                    rsync_line(
                        "-",
                        size,
                        rng.randrange(1_420_000_000, T0),
                        f"{version}/{base}{rng.choice(exts)}",
                    )
                )
        p += 1
    del out[lines:]
    return out


def bench_rsync_parse(args: argparse.Namespace) -> dict[str, Any]:
    from mirrorhub.workers import rsync_list

    started = time.perf_counter()
    lines = rsync_listing(args.rsync_lines)
    print(f"rsync_parse: generated {len(lines):,} lines in {time.perf_counter() - started:.1f} s")
    entries = Counter(e.kind.value for e in rsync_list.parse_rsync_listing(lines))
    assert sum(entries.values()) == len(lines), entries  # every line is an entry
    parse_s, split_s = [], []
    for _ in range(3):
        rsync_list._day_start.cache_clear()  # each run starts cold, like a new listing
        rsync_list._clock.cache_clear()
        t = time.perf_counter()
        deque(rsync_list.parse_rsync_listing(lines), maxlen=0)
        parse_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        for line in lines:
            line.split()
        split_s.append(time.perf_counter() - t)
        print(f"  parse {parse_s[-1]:.2f} s   str.split {split_s[-1]:.2f} s")
    parse, split = statistics.median(parse_s), statistics.median(split_s)
    return {
        "lines": len(lines),
        "entries": dict(entries),
        "bytes": sum(len(line) for line in lines),
        "parse_s": [round(x, 3) for x in parse_s],
        "split_s": [round(x, 3) for x in split_s],
        "parse_lines_per_s": round(len(lines) / parse),
        "split_lines_per_s": round(len(lines) / split),
        "parse_over_split": round(parse / split, 2),
    }


# --- 2. HTTP listing crawl --------------------------------------------------------------


def crawl_tree(root: Path, files: int, leaf_dirs: int, projects: int, seed: int = 5) -> int:
    """``projects`` top directories holding ``leaf_dirs`` version directories in all, ``files``
    sparse files spread over those; returns the number of directories (root excluded)."""
    rng = random.Random(seed)
    root.mkdir(mode=0o755, exist_ok=True)
    root.chmod(0o755)
    leaves = []
    for i in range(leaf_dirs):
        d = root / f"project-{i % projects:02d}" / f"v{i // projects}.{i % 7}"
        d.mkdir(mode=0o755, parents=True)
        leaves.append(d)
    for j in range(files):
        d = leaves[j % leaf_dirs]
        name = f"project-{j % projects:02d}-{j:06d}-{rng.choice(['amd64', 'arm64', 'src'])}.tar.xz"
        fd = os.open(d / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.ftruncate(fd, int(10 ** rng.uniform(2, 9.6)))  # sparse: no blocks written
            mtime = rng.randrange(1_420_000_000, T0)
            os.utime(fd, (mtime, mtime))
        finally:
            os.close(fd)
    return projects + leaf_dirs


def bench_http_crawl(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from mirrorhub.workers.http_scan import CrawlLimits, crawl
    from tests.servers import nginx_autoindex

    root = tmp / "crawl-tree"
    started = time.perf_counter()
    dirs = crawl_tree(root, args.crawl_files, args.crawl_dirs - 50, 50)
    made = time.perf_counter() - started
    print(f"http_crawl: {args.crawl_files:,} files in {dirs:,} directories in {made:.1f} s")
    runs = []
    with nginx_autoindex(root, "127.0.0.2", workdir=tmp / "crawl-nginx") as url:
        for n in range(args.crawl_runs):
            cpu, t = cpu_seconds(), time.perf_counter()
            result = asyncio.run(crawl(url, allow_private=True, limits=CrawlLimits()))
            wall = time.perf_counter() - t
            cpu = cpu_seconds() - cpu
            assert len(result.files) == args.crawl_files, len(result.files)
            assert result.pages == dirs + 1, result.pages
            runs.append(
                {
                    "seconds": round(wall, 2),
                    "pages": result.pages,
                    "files": len(result.files),
                    "pages_per_s": round(result.pages / wall),
                    "files_per_s": round(len(result.files) / wall),
                    "crawler_cpu_s": round(cpu, 2),
                }
            )
            print(f"  crawl {n + 1}: {runs[-1]}")
    return {
        "files": args.crawl_files,
        "directories": dirs,
        "pages_per_crawl": dirs + 1,
        "limits": "CrawlLimits() (concurrency 4)",
        "runs": runs,
    }


# --- 3. probe round ---------------------------------------------------------------------


@contextlib.contextmanager
def hanging_server(address: str) -> Iterator[int]:
    """Accepts connections and never answers; yields its port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((address, 0))
    sock.listen(512)
    sock.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def loop() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError, OSError):
                conn, _ = sock.accept()
                held.append(conn)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for conn in held:
            conn.close()
        sock.close()


async def _probe_rounds(
    db: Path, origin: Path, healthy: list[str], hanging: str, refused: list[str], rounds: int
) -> dict[str, Any]:
    from mirrorhub.db.migrate import upgrade_engine
    from mirrorhub.db.session import create_engine, session_factory
    from mirrorhub.services import add_mirror
    from mirrorhub.settings import Settings
    from mirrorhub.workers.probe import probe_mirrors

    settings = Settings(
        database_url=f"sqlite:///{db}", origin_dir=origin, allow_private_mirrors=True
    )
    engine = create_engine(settings.database_url)
    try:
        await upgrade_engine(engine)
        sessions = session_factory(engine)
        urls = [(u, "ok") for u in healthy] + [(hanging, "hang")] * 100
        urls += [(u, "refused") for u in refused]
        random.Random(7).shuffle(urls)  # the round goes by name: mix the kinds
        kind_of = {}
        for i, (url, kind) in enumerate(urls):
            name = f"m{i:04d}"
            kind_of[name] = kind
            await add_mirror(sessions, {"name": name, "http_url": url}, allow_private=True)
        out: dict[str, Any] = {
            "endpoints": len(urls),
            "kinds": dict(Counter(kind_of.values())),
            "probe_concurrency": settings.probe_concurrency,
            "probe_connect_timeout_seconds": settings.probe_connect_timeout_seconds,
            "probe_timeout_seconds": settings.probe_timeout_seconds,
            "rounds": [],
        }
        for n in range(rounds):
            cpu, t = cpu_seconds(), time.perf_counter()
            outcomes = await asyncio.wait_for(probe_mirrors(sessions, settings), 300)
            wall = time.perf_counter() - t
            cpu = cpu_seconds() - cpu
            seen = Counter(
                (kind_of[o.probe.name], r.error or "ok") for o in outcomes for r in o.probe.results
            )
            traces = sum(1 for o in outcomes if o.probe.mirror_trace is not None)
            row = {
                "seconds": round(wall, 2),
                "cpu_s": round(cpu, 2),
                "results": {f"{k}->{e}": c for (k, e), c in sorted(seen.items())},
                "traces_read": traces,
            }
            out["rounds"].append(row)
            print(f"  round {n + 1}: {row}")
        return out
    finally:
        await engine.dispose()


def bench_probe_round(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from tests.servers import free_port, make_tree, nginx_autoindex

    trace = {"project/trace/mirrorhub": (f"{int(time.time())}\n".encode(), T0)}
    origin = make_tree(tmp / "probe-origin", trace)
    served = make_tree(tmp / "probe-mirror", trace)
    addresses = [f"127.0.0.{11 + i}" for i in range(4)]
    refused_addr = "127.0.0.16"
    refused = [f"http://{refused_addr}:{free_port(refused_addr)}/" for _ in range(100)]
    with contextlib.ExitStack() as stack:
        bases = [
            stack.enter_context(nginx_autoindex(served, a, workdir=tmp / f"probe-n{i}"))
            for i, a in enumerate(addresses)
        ]
        hang_port = stack.enter_context(hanging_server("127.0.0.15"))
        healthy = [bases[i % len(bases)] for i in range(800)]
        print(f"probe_round: 800 healthy on {len(bases)} nginx, 100 hanging, 100 refused")
        return asyncio.run(
            _probe_rounds(
                tmp / "probe.db",
                origin,
                healthy,
                f"http://127.0.0.15:{hang_port}/",
                refused,
                args.probe_rounds,
            )
        )


# --- 4. detection times -----------------------------------------------------------------


def poll(check: Callable[[], Any], timeout: float, step: float = 0.1) -> float | None:
    """Seconds until ``check()`` is true (polled every ``step``), None after ``timeout``."""
    import httpx

    start = time.monotonic()
    while time.monotonic() - start < timeout:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError, TypeError):
            if check():
                return time.monotonic() - start
        time.sleep(step)
    return None


def cli(env: dict[str, str], *argv: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "mirrorhub", *argv], env=env, check=True, capture_output=True,
        timeout=60,
    )  # fmt: skip


def summary(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    return {
        "runs_s": [None if v is None else round(v, 1) for v in values],
        "median_s": round(statistics.median(got), 1) if got else None,
        "max_s": round(max(got), 1) if got else None,
        "timeouts": len(values) - len(got),
    }


def bench_detection(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import httpx

    from mirrorhub.settings import Settings
    from tests.servers import free_port, make_tree, nginx_autoindex, wait_for_port

    files = {
        "pub/a.iso": (random.Random(1).randbytes(100_000), T0),
        "pub/b.iso": (random.Random(2).randbytes(100_000), T0),
        "project/trace/mirrorhub": (f"{T0}\n".encode(), T0),
    }
    origin = make_tree(tmp / "det-origin", files)
    fresh_tree = make_tree(tmp / "det-fresh", files)  # gets each new version (is "synced")
    flaky_tree = make_tree(tmp / "det-flaky", files)  # is stopped and restarted
    (tmp / "det-geoip").mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIRRORHUB_")},
        "MIRRORHUB_DATABASE_URL": f"sqlite:///{tmp / 'det.db'}",
        "MIRRORHUB_ORIGIN_DIR": str(origin),
        "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true",
        "MIRRORHUB_TRUSTED_PROXIES": "127.0.0.1",
        "MIRRORHUB_GEOIP_DIR": str(tmp / "det-geoip"),  # empty: no GeoIP data
    }
    d = Settings()
    defaults = {
        k: getattr(d, k)
        for k in (
            "probe_interval", "probe_down_after", "probe_up_after",
            "probe_connect_timeout_seconds", "probe_timeout_seconds", "origin_watch_seconds",
            "recheck_interval", "index_refresh_seconds", "scan_interval",
        )
    }  # fmt: skip
    client = {"x-forwarded-for": "192.0.2.1"}
    port = free_port("127.0.0.1")
    flaky_port = free_port("127.0.0.22")
    out: dict[str, Any] = {"settings": defaults}
    log = tmp / "serve.log"
    with contextlib.ExitStack() as stack:
        fresh_url = stack.enter_context(
            nginx_autoindex(fresh_tree, "127.0.0.21", workdir=tmp / "det-n21")
        )
        flaky = contextlib.ExitStack()
        stack.callback(flaky.close)
        flaky_url = flaky.enter_context(
            nginx_autoindex(flaky_tree, "127.0.0.22", workdir=tmp / "det-n22", port=flaky_port)
        )
        cli(env, "db", "upgrade")
        cli(env, "mirror", "add", "fresh", "--http", fresh_url, "--capacity", "100000")
        cli(env, "mirror", "add", "flaky", "--http", flaky_url, "--capacity", "1")
        if args.hanging:  # mirrors that accept connections and never answer
            hang_port = stack.enter_context(hanging_server("127.0.0.23"))
            for i in range(args.hanging):
                cli(env, "mirror", "add", f"hang{i:02d}", "--http",
                    f"http://127.0.0.23:{hang_port}/h{i}/")  # fmt: skip
            out["hanging_mirrors"] = args.hanging
        logf = stack.enter_context(log.open("wb"))
        proc = subprocess.Popen(
            [sys.executable, "-m", "mirrorhub", "serve", "--port", str(port)],
            env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

        def stop_server() -> None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

        stack.callback(stop_server)
        try:
            wait_for_port("127.0.0.1", port, proc=None, timeout=60)
        except RuntimeError:
            logf.flush()
            print(log.read_text()[-3000:], file=sys.stderr)
            raise
        http = stack.enter_context(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10))

        def decision(path: str) -> dict[str, Any]:
            body: dict[str, Any] = http.get(path + "?json", headers=client).json()
            return body

        def ranked(path: str) -> set[str]:
            return {c["mirror"] for c in decision(path)["ranked"]}

        def reason(path: str, mirror: str) -> str | None:
            return {e["mirror"]: e["reason"] for e in decision(path)["excluded"]}.get(mirror)

        took = poll(
            lambda: (
                {"fresh", "flaky"} <= ranked("/pub/a.iso")
                and {"fresh", "flaky"} <= ranked("/pub/b.iso")
            ),
            120,
        )
        if took is None:
            raise RuntimeError(f"mirrors never both in rotation: {decision('/pub/a.iso')}")
        out["startup_s"] = round(took, 1)
        print(f"detection: both mirrors in rotation {took:.1f} s after start")

        # (b) origin change -> the synced mirror back in rotation for the new version.
        seen_new: list[float | None] = []
        fresh_back: list[float | None] = []
        other_reason: list[str | None] = []
        for rep in range(args.reps):
            mtime = T0 + 600 * (rep + 1)
            body = random.Random(100 + rep).randbytes(100_000 + 1000 * (rep + 1))
            for tree in (origin, fresh_tree):
                (tree / "pub/a.iso").write_bytes(body)
                os.utime(tree / "pub/a.iso", (mtime, mtime))
            for tree in (fresh_tree, origin):  # the origin last: its trace starts the scan
                (tree / "project/trace/mirrorhub").write_text(f"{int(time.time())}\n")
            start = time.monotonic()
            state: dict[str, Any] = {}

            def check(
                mtime: int = mtime, start: float = start, state: dict[str, Any] = state
            ) -> bool:
                dec = decision("/pub/a.iso")
                if dec["file"] and dec["file"]["mtime"] == mtime:
                    state.setdefault("seen", time.monotonic() - start)
                    if dec["chosen"] and dec["chosen"]["mirror"] == "fresh":
                        return True
                return False

            took = poll(check, 120)
            seen_new.append(state.get("seen"))
            fresh_back.append(took)
            other_reason.append(reason("/pub/a.iso", "flaky"))
            print(
                f"  origin change {rep + 1}: new version in the index after "
                f"{state.get('seen', float('nan')):.1f} s, fresh mirror chosen after "
                f"{float('nan') if took is None else took:.1f} s (flaky: {other_reason[-1]})"
            )
        out["origin_change_to_fresh_mirror"] = summary(fresh_back)
        out["origin_change_to_new_version_in_index"] = summary(seen_new)
        out["unsynced_mirror_reason"] = other_reason

        # (a) mirror stopped -> excluded as down; restarted -> back in rotation.
        down: list[float | None] = []
        back: list[float | None] = []
        for rep in range(args.reps):
            flaky.close()  # SIGTERM to nginx's process group, waited for
            start = time.monotonic()
            took = poll(lambda: reason("/pub/b.iso", "flaky") == "down", 120)
            down.append(took)
            t_down = time.monotonic() - start
            flaky = contextlib.ExitStack()
            flaky.enter_context(
                nginx_autoindex(
                    flaky_tree, "127.0.0.22", workdir=tmp / f"det-n22-{rep}", port=flaky_port
                )
            )
            start = time.monotonic()
            took_back = poll(lambda: "flaky" in ranked("/pub/b.iso"), 120)
            back.append(took_back)
            print(
                f"  mirror stop {rep + 1}: excluded as down after "
                f"{float('nan') if took is None else took:.1f} s (waited {t_down:.1f} s); "
                f"back in rotation after "
                f"{float('nan') if took_back is None else took_back:.1f} s"
            )
        out["mirror_stop_to_excluded"] = summary(down)
        out["mirror_restart_to_back"] = summary(back)
        flaky.close()
    return out


def git_state() -> str:
    """HEAD, and "+dirty" when package code has uncommitted changes (read-only git calls)."""
    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
            timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "mirrorhub"],
            cwd=root, capture_output=True, text=True, timeout=10, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# --- main -------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=PARTS, help="run only this part")
    parser.add_argument("--rsync-lines", type=int, default=1_000_000)
    parser.add_argument("--crawl-files", type=int, default=100_000)
    parser.add_argument("--crawl-dirs", type=int, default=5_000)
    parser.add_argument("--crawl-runs", type=int, default=2)
    parser.add_argument("--probe-rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=3, help="detection repetitions")
    parser.add_argument(
        "--hanging", type=int, default=0,
        help="detection: also register N mirrors that never answer (results: detection_hanging)",
    )  # fmt: skip
    parser.add_argument("--output", type=Path, default=RESULTS / "workers.json")
    args = parser.parse_args()
    parts = args.only or list(PARTS)

    output: dict[str, Any] = {}
    if args.output.exists():
        with contextlib.suppress(ValueError):
            output = json.loads(args.output.read_text())
    output.update(
        benchmark="workers",
        date=datetime.now(UTC).isoformat(timespec="seconds"),
        load_average_at_start=[round(x, 2) for x in os.getloadavg()],
        python=sys.version.split()[0],
        git=git_state(),
    )
    began = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmpdir:
        tmp = Path(tmpdir)
        tmp.chmod(0o755)  # nginx's workers must traverse it
        for part in PARTS:
            if part not in parts:
                continue
            t = time.perf_counter()
            if part == "rsync_parse":
                result = bench_rsync_parse(args)
            elif part == "http_crawl":
                result = bench_http_crawl(args, tmp)
            elif part == "probe_round":
                result = bench_probe_round(args, tmp)
            else:
                result = bench_detection(args, tmp)
            result["part_wall_s"] = round(time.perf_counter() - t, 1)
            result["date"] = datetime.now(UTC).isoformat(timespec="seconds")
            output[part + ("_hanging" if part == "detection" and args.hanging else "")] = result
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(output, indent=2) + "\n")
    print(f"total {time.perf_counter() - began:.0f} s; results written to {args.output}")


if __name__ == "__main__":
    main()
