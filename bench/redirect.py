"""Redirect throughput: mirrorhub's hot path against a bare ASGI app under the same uvicorn.

    .venv/bin/python -m bench.redirect [--files 100000] [--mirrors 200] [--duration 15]
                                       [--connections 32] [--threads 2] [--rounds 3]

Builds a synthetic install in a temporary directory (SQLite database, city + ASN GeoIP files;
see bench/synth.py), starts the servers as separate processes with the uvicorn settings of
``mirrorhub serve`` on 127.0.0.1:

* ``bare``: a fixed 302 with Location and Content-Length (the floor of the stack), on
  uvicorn's own httptools protocol (before 2026-11-30's last runs it shared mirrorhub's
  protocol subclass, which cost it 3-4.5 %: ``--bare-subclass`` runs that too);
* ``bare-full``: a fixed 302 carrying the same headers as a typical mirrorhub answer
  (Location, Cache-Control, X-Mirrorhub-Mirror, 5 Link lines, Digest), to split the cost of
  writing those headers from the cost of deciding them;
* ``mirrorhub``: ``create_app(settings)`` with ``trusted_proxies=127.0.0.1/32``.

All get the same wrk Lua script: 10,000 (path, X-Forwarded-For) pairs sampled from the files
a mirror should serve and from thousands of client addresses across ~50 countries. An httpx
check of every pair first asserts that mirrorhub answers each with a 302 to a mirror; during
the rounds wrk counts answers of 400 and above (the run warns if mirrorhub gave any).
``--count-statuses`` has the script count every status code too, through wrk's per-response
Lua hook: that hook builds a table of the answer's headers for each response, and on this
2-core machine wrk's share of the CPU then grows with the answer's header count, which cost
mirrorhub (eleven headers) ~13 % of its requests/s and the bare app (two) ~4 % (2026-11-30,
docs/performance.md, session 13). After a warm-up, rounds alternate between the apps (each
round starting one app later); the report gives the median requests/s, latency percentiles
and server CPU time per request of each, and the ratio mirrorhub / bare.

Not a test: numbers depend on the (shared, 2-core) machine, so only ratios measured in the
same run mean much. Results go to bench/results/redirect.json.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make "bench" importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx

from bench.synth import (
    FIRST_OCTET,
    build_database,
    client_addresses,
    country_list,
    request_path,
    write_geoip,
)

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
SERVER = BENCH / "server.py"
# What a --variant's JSON may hold (bench/server.py reads these keys of a mirrorhub config).
VARIANT_FIELDS = frozenset({"source", "settings", "experiment", "stats_enabled"})
READY_TIMEOUT = 180.0
RESULT_MARK = "BENCH_RESULT "
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


# Where a sample of the event-loop thread goes: the first rule with a frame on the stack.
# Frame names as py-spy gives them ("Class.method"; native frames by their C symbol with
# --native); a mark matches a frame of that name or ending in ".mark", ".record" any frame
# ending so, "StatsFlusher." any method of the class.
PROFILE_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("garbage collector", ("gc_collect_main", "gc_collect_generations")),
    # Only with --native; without it the write system call counts to the Python frame that
    # made it (uvicorn's send(), or mirrorhub's protocol writing the 302).
    ("socket write (the system call)", ("UVStream_write", "UVStream__try_write", "write")),
    ("uvicorn: keep-alive timer, flow control", ("HttpToolsProtocol.on_response_complete",)),
    ("uvicorn: send() (header checks, status line)", ("RequestResponseCycle.send",)),
    ("dispatcher: recorders (stats, load, metrics)", ("FanOut.record", ".record")),
    ("dispatcher: path (normalize_path)", ("normalize_path",)),
    ("dispatcher: client context", ("Dispatcher.context",)),
    ("dispatcher: pick (band cache, draw, load factors)", ("Index.fast_pick",)),
    (
        "dispatcher: render headers",
        ("Dispatcher.answer_lines", "Dispatcher.redirect_start", "Dispatcher.redirect"),
    ),
    ("dispatcher: rest of __call__", ("Dispatcher.__call__",)),
    ("dispatcher: rest of fast_redirect (path memo, lookups)", ("Dispatcher.fast_redirect",)),
    ("protocol: format the 302 and hold it for the pass", ("RedirectProtocol._write",)),
    ("protocol: write the pass's 302s (the system calls)", ("_Replies.flush",)),
    ("protocol: direct answer (checks, scope fields)", ("RedirectProtocol.on_headers_complete",)),
    ("uvicorn: run_asgi, task", ("RequestResponseCycle.run_asgi",)),
    ("httptools parse, scope, task creation", ("HttpToolsProtocol.data_received",)),
    ("background: statistics flush", ("StatsFlusher.",)),
    ("background: load sync", ("_sync_loop", "exchange")),
    ("background: index refresh", ("refresh_loop", "refresh_once")),
)
MAIN_THREAD_MARKS = ("Runner.run", "run_until_complete", "uv_run", "Loop__run")


def classify(frames: list[str]) -> str:
    names = set(frames)
    for label, marks in PROFILE_RULES:
        for mark in marks:
            if mark.startswith("."):
                hit = any(f.endswith(mark) for f in names)
            elif mark.endswith("."):
                hit = any(f.startswith(mark) or ("." + mark) in f for f in names)
            else:
                hit = mark in names or any(f.endswith("." + mark) for f in names)
            if hit:
                return label
    return "event loop (epoll, read, callbacks)"


def thread_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of each thread of a process."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            out[int(task.name)] = cpu_seconds_path(task / "stat")
    return out


def profile_server(
    server: Server, lua: Path, workdir: Path, duration: int, opts: dict[str, int], native: bool
) -> dict[str, Any]:
    """Sample the server with py-spy during one more wrk run; break the event-loop thread's
    time down by stage (µs per request = share of its samples x its CPU time per request)."""
    raw = workdir / f"profile-{server.name}.txt"
    mode = ["--native"] if native else ["--nonblocking"]
    spy = subprocess.Popen(
        [py_spy(), "record", "--pid", str(server.process.pid), "--duration", str(duration),
         "--rate", "250", "--format", "raw", "--output", str(raw), *mode],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    before = thread_cpu(server.process.pid)
    result = run_wrk(server, lua, duration=duration, **opts)
    after = thread_cpu(server.process.pid)
    spy.wait(duration + 30)
    main_cpu = after.get(server.process.pid, 0.0) - before.get(server.process.pid, 0.0)
    other_cpu = sum(v - before.get(k, 0.0) for k, v in after.items() if k != server.process.pid)
    requests = result["requests"]
    shares: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = [f.split(" (")[0] for f in stack.split(";")]
        if not any(m in frames for m in MAIN_THREAD_MARKS):
            continue
        n = int(count)
        total += n
        label = classify(frames)
        shares[label] = shares.get(label, 0) + n
        own[frames[-1]] = own.get(frames[-1], 0) + n
    main_us = main_cpu / requests * 1e6
    table = {
        label: {"share": round(n / total, 3), "us_per_request": round(n / total * main_us, 1)}
        for label, n in sorted(shares.items(), key=lambda kv: -kv[1])
    }
    print(
        f"py-spy {server.name}: {requests:,} requests under the profiler "
        f"({result['rps']:.0f} req/s), event-loop thread {main_us:.1f} us/request, "
        f"other threads {other_cpu / requests * 1e6:.1f} us/request; {total} samples"
    )
    for label, row in table.items():
        print(f"  {row['share']:6.1%}  {row['us_per_request']:6.1f} us  {label}")
    print("  busiest functions (own samples):")
    for name, n in sorted(own.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {n / total:6.1%}  {name}")
    return {
        "native": native,
        "requests": requests,
        "rps": round(result["rps"], 1),
        "samples": total,
        "event_loop_thread_us_per_request": round(main_us, 1),
        "other_threads_us_per_request": round(other_cpu / requests * 1e6, 1),
        "stages": table,
    }


def memory_mb(pid: int) -> dict[str, float]:
    """A server's resident size now and at its peak (caches filled by every round)."""
    out = {}
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out["rss" if key == "VmRSS" else "peak_rss"] = round(
                    int(value.split()[0]) / 1024, 1
                )
    return out


def py_spy() -> str:
    """py-spy from the venv (``pip install py-spy``) or the PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy") or "py-spy"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# ``--pin``: the servers on CPU 0, wrk on the others (taskset), so that the client never
# shares a core with the server it measures.
WRK_PREFIX: list[str] = []
SERVER_CPUS: set[int] | None = None
# One hash seed for every server (unless the caller sets one): with a random seed per
# process, two servers of the same code differed by up to 3 us per request in one run
# (dict layouts, string hashes), as much as the differences being measured.
SERVER_ENV = dict(os.environ, PYTHONHASHSEED=os.environ.get("PYTHONHASHSEED", "0"))


def start_server(name: str, argv: list[str], workdir: Path) -> Server:
    port = free_port()
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, str(SERVER), argv[0], str(port), *argv[1:]],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=BENCH.parent,
            env=SERVER_ENV,
        )
    if SERVER_CPUS is not None:
        os.sched_setaffinity(process.pid, SERVER_CPUS)
    return Server(name, port, process, log)


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait(timeout=5)


def wait_ready(server: Server, expected_files: int | None) -> float:
    """Poll until the server answers (mirrorhub: until its index holds every file)."""
    started = time.monotonic()
    deadline = started + READY_TIMEOUT
    with httpx.Client(timeout=5.0) as client:
        while time.monotonic() < deadline:
            if server.process.poll() is not None:
                raise RuntimeError(f"{server.name} exited:\n{server.log.read_text()[-3000:]}")
            try:
                if expected_files is None:
                    client.get(server.url + "/")
                    return time.monotonic() - started
                health = client.get(server.url + "/-/health").json()
                if health.get("files") == expected_files:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
    raise RuntimeError(f"{server.name} not ready after {READY_TIMEOUT:.0f} s")


@contextlib.contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            stop_server(server)


# --- the load ------------------------------------------------------------------------------


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def write_lua(path: Path, samples: list[tuple[str, str]], count_statuses: bool) -> None:
    """A wrk script cycling through (path, X-Forwarded-For) pairs; ``count_statuses``: also
    count each status code (wrk's per-response hook, dear for wrk: see the docstring)."""
    paths = ",\n".join(lua_string(p) for p, _ in samples)
    addrs = ",\n".join(lua_string(a) for _, a in samples)
    hook = (
        "function response(status, headers, body)\n"
        "  counts[status] = (counts[status] or 0) + 1\n"
        "end\n"
        if count_statuses
        else ""
    )
    path.write_text(
        f"""-- generated by bench/redirect.py
local paths = {{
{paths}
}}
local addrs = {{
{addrs}
}}
local reqs = {{}}
counts = {{}}  -- global: done() reads it with thread:get
local i = 0
local threads = {{}}
local started = 0

function setup(thread)
  thread:set("id", started)
  started = started + 1
  table.insert(threads, thread)
end

function init(args)
  for k = 1, #paths do
    reqs[k] = wrk.format("GET", paths[k], {{["X-Forwarded-For"] = addrs[k]}})
  end
  i = (id * 4999) % #reqs
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

{hook}
function done(summary, latency, requests)
  local merged = {{}}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do
      merged[k] = (merged[k] or 0) + v
    end
  end
  local parts = {{}}
  for k, v in pairs(merged) do
    table.insert(parts, string.format('"%d": %d', k, v))
  end
  local e = summary.errors
  io.write(string.format(
    '{RESULT_MARK}{{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {{"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}, ' ..
    '"statuses": {{%s}}, "latency_us": {{"mean": %.1f, "p50": %d, "p90": %d, "p99": %d, ' ..
    '"p999": %d, "max": %d}}}}\\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    table.concat(parts, ", "),
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc/<pid>/stat."""
    return cpu_seconds_path(Path(f"/proc/{pid}/stat"))


def cpu_seconds_path(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def run_wrk(
    server: Server, lua: Path, *, threads: int, connections: int, duration: int
) -> dict[str, Any]:
    """One wrk run; adds req/s and the server's CPU time per request (robust to noise)."""
    url = server.url
    cmd = [
        *WRK_PREFIX,
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{duration}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(lua),
        url + "/",
    ]
    cpu_before = cpu_seconds(server.process.pid)
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True)
    cpu = cpu_seconds(server.process.pid) - cpu_before
    for line in proc.stdout.splitlines():
        if line.startswith(RESULT_MARK):
            result: dict[str, Any] = json.loads(line[len(RESULT_MARK) :])
            result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
            if not result["statuses"]:  # not counted one by one: what wrk tells apart
                failed = result["errors"]["status"]
                result["statuses"] = {"below 400": result["requests"] - failed}
                if failed:
                    result["statuses"]["400 and above"] = failed
            result["server_cpu_s"] = round(cpu, 2)
            result["server_cpu_us_per_request"] = round(cpu / result["requests"] * 1e6, 1)
            result["server_cpu_share"] = round(cpu / (result["duration_us"] / 1e6), 2)
            return result
    raise RuntimeError(f"no result from wrk:\n{proc.stdout}\n{proc.stderr}")


# --- checks --------------------------------------------------------------------------------


def client_country(address: str) -> str | None:
    octet = int(address.split(".", 1)[0])
    names = country_list()
    return names[octet - FIRST_OCTET] if 0 <= octet - FIRST_OCTET < len(names) else None


def sanity_check(
    server: Server, samples: list[tuple[str, str]], mirror_hosts: frozenset[str], count: int
) -> tuple[dict[str, Any], list[list[str]]]:
    """Ask mirrorhub for ``count`` samples: every answer must be a 302 to a known mirror."""
    statuses: Counter[int] = Counter()
    chosen: Counter[str] = Counter()
    same_country = known = 0
    typical: list[list[str]] = []
    with httpx.Client(base_url=server.url, timeout=10.0) as client:
        for path, addr in samples[:count]:
            r = client.get(path, headers={"X-Forwarded-For": addr})
            statuses[r.status_code] += 1
            location = r.headers.get("location", "")
            host = location.split("/")[2] if location.count("/") >= 2 else ""
            if r.status_code != 302 or host not in mirror_hosts:
                raise RuntimeError(f"{path} from {addr}: {r.status_code} {location!r}\n{r.text}")
            if not location.endswith(path):
                raise RuntimeError(f"{path}: Location {location!r} does not end with the path")
            mirror = r.headers["x-mirrorhub-mirror"]
            chosen[mirror] += 1
            cc = client_country(addr)
            if cc is not None:
                known += 1
                same_country += mirror.rsplit("-", 1)[1].upper() == cc
            if not typical and len(r.headers.get_list("link")) >= 5:
                typical = [[k.decode(), v.decode()] for k, v in r.headers.raw]
    report = {
        "requests": count,
        "statuses": {str(k): v for k, v in statuses.items()},
        "distinct_mirrors_chosen": len(chosen),
        "same_country_share": round(same_country / known, 3) if known else None,
    }
    return report, typical


def check_bare(server: Server) -> None:
    r = httpx.get(server.url + "/pub/x", timeout=5.0)
    if r.status_code != 302 or "location" not in r.headers:
        raise RuntimeError(f"{server.name}: {r.status_code}")


# --- the run -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    import uvicorn

    return {
        "cpus": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "uvicorn": uvicorn.__version__,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split("\n")[0],
        "load_average_at_start": os.getloadavg(),
    }


def summarise(runs: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in names:
        mine = [r for r in runs if r["app"] == name]
        out[name] = {
            "rps_median": round(statistics.median(r["rps"] for r in mine), 1),
            "rps_each": [round(r["rps"], 1) for r in mine],
            "cpu_us_per_request_median": round(
                statistics.median(r["server_cpu_us_per_request"] for r in mine), 1
            ),
            "server_cpu_share_median": statistics.median(r["server_cpu_share"] for r in mine),
            **{
                f"{p}_ms": round(statistics.median(r["latency_us"][p] for r in mine) / 1000, 3)
                for p in ("p50", "p90", "p99", "p999")
            },
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--mirrors", type=int, default=200)
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--warmup", type=int, default=5, help="seconds of warm-up per app")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=5_000, help="distinct client addresses")
    parser.add_argument("--samples", type=int, default=10_000, help="(path, client) pairs")
    parser.add_argument(
        "--sanity-samples",
        type=int,
        default=None,
        help="how many of the pairs the sanity check asks mirrorhub for, one at a time "
        "(default: all; a 200,000-pair mix takes minutes)",
    )
    parser.add_argument(
        "--count-statuses",
        action="store_true",
        help="have wrk count every status code (its per-response Lua hook: dear for wrk on a "
        "2-core machine, and dearer the more headers an answer has)",
    )
    parser.add_argument("--no-bare-full", action="store_true", help="skip the bare-full app")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME=JSON",
        help="one more mirrorhub server in the rounds, with settings/experiment switches "
        'merged into its config (see bench/server.py), e.g. \'no-load={"experiment": '
        '{"load_sync": false}}\' or \'links-2={"settings": {"link_alternates": 1}}\'',
    )
    parser.add_argument(
        "--capacity-scale",
        type=float,
        default=1.0,
        help="multiply every synthetic mirror's capacity (1: wrk's load is far beyond every "
        "mirror, so the capacity-aware pick holds them all back; 10000: every mirror has room)",
    )
    parser.add_argument(
        "--bare-direct",
        action="store_true",
        help="also run bare-full's fixed answer through mirrorhub's direct protocol path "
        "(no decision: the floor of that path)",
    )
    parser.add_argument(
        "--bare-subclass",
        action="store_true",
        help="also run the bare app on mirrorhub's protocol subclass instead of uvicorn's own "
        "(what the subclass costs a request it hands to ASGI)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run the servers on CPU 0 and wrk on the other CPUs (taskset)",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="after the rounds, sample mirrorhub with py-spy under load and print hot functions",
    )
    parser.add_argument(
        "--profile-app",
        action="append",
        help="which servers --profile samples (repeatable; default: bare-full and mirrorhub)",
    )
    parser.add_argument(
        "--profile-native",
        action="store_true",
        help="py-spy --native (C frames too: httptools, uvloop, the collector; pauses the "
        "server for each sample, so figures under it are slower)",
    )
    parser.add_argument("--output", type=Path, default=RESULTS / "redirect.json")
    args = parser.parse_args(argv)
    if args.bare_direct and args.no_bare_full:
        parser.error("--bare-direct sends bare-full's answer: drop --no-bare-full")
    variants: list[tuple[str, dict[str, Any]]] = []
    for text in args.variant:
        name, sep, extra = text.partition("=")
        if not sep or name in ("bare", "bare-full", "bare-direct", "bare-subclass", "mirrorhub"):
            parser.error(f"--variant {text!r}: want NAME=JSON with a new name")
        try:
            fields = json.loads(extra)
        except json.JSONDecodeError as exc:
            parser.error(f"--variant {text!r}: {exc}")
        unknown = set(fields) - VARIANT_FIELDS if isinstance(fields, dict) else {"(not an object)"}
        if unknown:
            # Any other key would be ignored or change the shared install (database, GeoIP
            # files), not the variant: refuse it rather than run mirrorhub unchanged.
            parser.error(
                f"--variant {text!r}: not a variant field: {', '.join(sorted(unknown))}; want "
                f'{", ".join(sorted(VARIANT_FIELDS))} (settings go under "settings")'
            )
        variants.append((name, fields))
    args.variants = variants
    if args.pin:
        global SERVER_CPUS
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            parser.error("--pin needs two CPUs")
        SERVER_CPUS = {cpus[0]}
        WRK_PREFIX[:] = ["taskset", "-c", ",".join(str(c) for c in cpus[1:])]
    for name in ("duration", "warmup", "connections", "threads", "rounds", "files", "mirrors"):
        if getattr(args, name) <= 0 and name != "warmup":
            parser.error(f"--{name} must be positive")
    if shutil.which("wrk") is None:
        parser.error("needs wrk on PATH (Debian: apt-get install wrk)")
    if args.profile and not shutil.which(py_spy()):
        parser.error("--profile needs py-spy (.venv/bin/pip install py-spy)")

    info = machine()
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-redirect-"))
    print(f"working in {workdir}", flush=True)
    try:
        return run(args, workdir, info)
    finally:
        if args.keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def run(args: argparse.Namespace, workdir: Path, info: dict[str, Any]) -> int:
    geo = write_geoip(workdir)
    print(f"building {args.files:,} files x {args.mirrors} mirrors ...", flush=True)
    stats = build_database(
        workdir / "mirrorhub.db",
        files=args.files,
        mirrors=args.mirrors,
        blocks=geo.blocks,
        capacity_scale=args.capacity_scale,
    )
    print(
        f"database ready in {stats.seconds:.1f} s: {stats.diffs:,} diffs, "
        f"{len(stats.redirectable):,} redirectable files",
        flush=True,
    )
    rng = random.Random(args.seed)
    clients = client_addresses(geo.blocks, args.clients)
    samples = [
        (request_path(rng.choice(stats.redirectable)), rng.choice(clients))
        for _ in range(args.samples)
    ]
    lua = workdir / "load.lua"
    write_lua(lua, samples, args.count_statuses)

    config = {
        "database_url": f"sqlite:///{workdir / 'mirrorhub.db'}",
        "geoip_city_db": str(geo.city_db),
        "geoip_asn_db": str(geo.asn_db),
        "trusted_proxies": [str(ipaddress.ip_network("127.0.0.1/32"))],
        "origin_url": "http://origin.example.org/",
    }
    servers: list[Server] = []
    with running(servers):
        mirrorhub = start_server("mirrorhub", ["mirrorhub", json.dumps(config)], workdir)
        servers.append(mirrorhub)
        ready = wait_ready(mirrorhub, args.files)
        print(f"mirrorhub ready in {ready:.1f} s (index of {args.files:,} files)", flush=True)
        checked = len(samples) if args.sanity_samples is None else args.sanity_samples
        sanity, typical = sanity_check(mirrorhub, samples, stats.mirror_hosts, checked)
        print(f"sanity check: {sanity}", flush=True)

        bare = start_server("bare", ["bare"], workdir)
        servers.append(bare)
        wait_ready(bare, None)
        check_bare(bare)
        order = [bare, mirrorhub]
        if not args.no_bare_full:
            keep = {"location", "cache-control", "content-length", "x-mirrorhub-mirror", "link"}
            full_headers = [h for h in typical if h[0] in keep or h[0] == "digest"]
            full = start_server("bare-full", ["bare", json.dumps(full_headers)], workdir)
            servers.append(full)
            wait_ready(full, None)
            check_bare(full)
            order = [bare, full, mirrorhub]
            if args.bare_direct:
                direct = start_server(
                    "bare-direct", ["bare-direct", json.dumps(full_headers)], workdir
                )
                servers.append(direct)
                wait_ready(direct, None)
                check_bare(direct)
                order.insert(2, direct)
        if args.bare_subclass:
            subclass = start_server("bare-subclass", ["bare-subclass"], workdir)
            servers.append(subclass)
            wait_ready(subclass, None)
            check_bare(subclass)
            order.insert(1, subclass)
        for name, extra in args.variants:
            variant = start_server(name, ["mirrorhub", json.dumps({**config, **extra})], workdir)
            servers.append(variant)
            wait_ready(variant, args.files)
            order.append(variant)

        opts = {"threads": args.threads, "connections": args.connections}
        if args.warmup > 0:
            for server in order:
                run_wrk(server, lua, duration=args.warmup, **opts)
        runs: list[dict[str, Any]] = []
        for rnd in range(1, args.rounds + 1):
            # Each round starts one server later: no app always runs right after the same one
            # (in fixed order the app after bare ran faster in some runs than the same code
            # later in the round).
            shift = (rnd - 1) % len(order)
            for server in order[shift:] + order[:shift]:
                result = run_wrk(server, lua, duration=args.duration, **opts)
                result.update(app=server.name, round=rnd)
                runs.append(result)
                lat = result["latency_us"]
                print(
                    f"round {rnd} {server.name:<10} {result['rps']:9.0f} req/s  "
                    f"p50 {lat['p50'] / 1000:6.2f} ms  p99 {lat['p99'] / 1000:6.2f} ms  "
                    f"cpu {result['server_cpu_us_per_request']:6.1f} us/req "
                    f"({result['server_cpu_share']:.0%} of a core)  "
                    f"statuses {result['statuses']}  errors {result['errors']}",
                    flush=True,
                )
        profiles = {}
        if args.profile:
            wanted = args.profile_app or ["bare-full", "mirrorhub"]
            for server in order:
                if server.name in wanted:
                    profiles[server.name] = profile_server(
                        server, lua, workdir, args.duration, opts, args.profile_native
                    )
        memory = {server.name: memory_mb(server.process.pid) for server in order}
        wrong = {
            k: v
            for r in runs
            if r["app"] == "mirrorhub"
            for k, v in r["statuses"].items()
            if k not in ("302", "below 400")
        }
        if wrong:
            print(f"WARNING: mirrorhub answered non-302 statuses: {wrong}", flush=True)

    counters = {}
    for server in order:
        for line in server.log.read_text(errors="replace").splitlines():
            if line.startswith("BENCH_COUNTERS "):
                counters[server.name] = json.loads(line[len("BENCH_COUNTERS ") :])
    names = [s.name for s in order]
    summary = summarise(runs, names)
    ratio = summary["mirrorhub"]["rps_median"] / summary["bare"]["rps_median"]
    cpu_ratio = (
        summary["bare"]["cpu_us_per_request_median"]
        / summary["mirrorhub"]["cpu_us_per_request_median"]
    )
    result = {
        "benchmark": "redirect",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "setup": {
            "files": args.files,
            "mirrors": args.mirrors,
            "capacity_scale": args.capacity_scale,
            "diffs": stats.diffs,
            "redirectable_files": len(stats.redirectable),
            "clients": args.clients,
            "samples": args.samples,
            "statuses_counted_by_wrk": args.count_statuses,
            "threads": args.threads,
            "connections": args.connections,
            "duration_s": args.duration,
            "warmup_s": args.warmup,
            "rounds": args.rounds,
            "mirrorhub_ready_s": round(ready, 2),
        },
        "sanity": sanity,
        "summary": summary,
        "ratio_mirrorhub_vs_bare": round(ratio, 3),
        "cpu_ratio_bare_vs_mirrorhub": round(cpu_ratio, 3),
        "runs": runs,
    }
    if args.variants:
        result["variants"] = dict(args.variants)
        result["ratio_vs_bare"] = {
            name: round(summary[name]["rps_median"] / summary["bare"]["rps_median"], 3)
            for name in names
            if name != "bare"
        }
    result["server_memory_mb_at_end"] = memory
    if counters:
        result["server_counters"] = counters
    if profiles:
        result["profile"] = {
            "command": "py-spy record --rate 250 --format raw "
            + ("--native" if args.profile_native else "--nonblocking"),
            **profiles,
        }
    if "bare-full" in summary:
        result["ratio_mirrorhub_vs_bare_full"] = round(
            summary["mirrorhub"]["rps_median"] / summary["bare-full"]["rps_median"], 3
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    print()
    print(f"{'app':<10} {'req/s':>9} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'cpu us/req':>11}")
    for name in names:
        s = summary[name]
        print(
            f"{name:<10} {s['rps_median']:9.0f} {s['p50_ms']:8.2f} {s['p90_ms']:8.2f} "
            f"{s['p99_ms']:8.2f} {s['cpu_us_per_request_median']:11.1f}"
        )
    print(f"mirrorhub / bare = {ratio:.2f} req/s (target >= 0.70)")
    for name, _ in args.variants:
        print(f"{name} / bare = {summary[name]['rps_median'] / summary['bare']['rps_median']:.2f}")
    for name, found in counters.items():
        print(f"{name} counters: {json.dumps(found)}")
    print(f"server memory after the last round (MB): {json.dumps(memory)}")
    print(f"bare / mirrorhub = {cpu_ratio:.2f} server CPU time per request")
    if "ratio_mirrorhub_vs_bare_full" in result:
        print(f"mirrorhub / bare-full = {result['ratio_mirrorhub_vs_bare_full']:.2f}")
    print(f"results written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
