"""Instructions per redirect, counted by callgrind: an A/B that the host's noise cannot move.

    .venv/bin/python -m bench.instructions [--files 20000] [--baseline /tmp/base]

On this shared 2-core machine a change worth 1 µs per request is inside the noise of
bench/redirect.py (its rounds differ by ±2 µs of server CPU). valgrind's callgrind counts the
instructions the hot path executes instead: the same code, data and inputs give the same
count, whatever else runs (two runs of one checkout differ by ~1 %: clock reads decide when a
load step or a statistics day ends). Instructions are not time (a cache miss costs no
instruction), so this is for comparing two versions of the Python that runs per request, not
for throughput.

The synthetic install of bench/hotpath.py (``--files`` files, 200 mirrors, 10,000 sampled
requests through a trusted proxy) is built once, outside valgrind. A child process under
callgrind (``PYTHONHASHSEED=0``, instrumentation off until the measured part) builds the
app's dispatcher, answers every request once through ASGI (which fills the dispatcher's path cache) and 12 times through ``fast_redirect`` to warm its
caches, then counts each stage
over the 10,000 requests, less a no-op call per request:

* ``lookup``: the request path's cache and the index's position lookup;
* ``context``: ``Dispatcher.context`` (client, options, ranking; cached per client);
* ``fast_redirect, no recorder`` and ``fast_redirect``: the whole synchronous answer, without
  and with the recorders the app registers (statistics, load estimate, metrics);
* ``recorder`` and ``recorder, no statistics``: the fused recorder alone, on the arguments
  ``fast_redirect`` gave it;
* ``protocol``: the request's bytes fed to a ``mirrorhub serve`` connection
  (``RedirectProtocol.data_received``) up to the written answer, without system calls:
  with a fixed answer instead of the dispatcher (the protocol's own share), with the
  dispatcher, and with the ten more headers a browser sends. The answers are written
  ``ANSWERS_PER_PASS`` at a time, as the server writes those of one loop pass together
  (15 is the mean pass under bench.redirect's 32 wrk connections).

``--baseline DIR`` (a checkout, e.g. ``git worktree add /tmp/base COMMIT``) runs the same
child on that checkout's ``mirrorhub`` and prints both. Needs valgrind (Debian: valgrind).
Results: bench/results/instructions.json.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import random
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
WARM_PASSES = 12
HELD_BACK_RATE = 10_000.0


def prepare(workdir: Path, files: int, samples: int, seed: int) -> dict[str, Any]:
    """The synthetic install and the sampled requests, pickled for the child."""
    from bench.hotpath import direct_scope, scope_for
    from bench.synth import build_database, client_addresses, request_path, write_geoip

    geo = write_geoip(workdir)
    stats = build_database(
        workdir / "mirrorhub.db", files=files, mirrors=200, blocks=geo.blocks, progress=False
    )
    rng = random.Random(seed)
    clients = client_addresses(geo.blocks, 5_000)
    scopes = [
        direct_scope(scope_for(request_path(rng.choice(stats.redirectable)), rng.choice(clients)))
        for _ in range(samples)
    ]
    (workdir / "requests.pickle").write_bytes(pickle.dumps((geo, scopes)))
    return {"files": files, "mirrors": 200, "diffs": stats.diffs, "samples": samples}


def child(outdir: Path, source: str | None) -> None:
    """Runs under callgrind: warm up, then one zeroed-and-dumped count per stage."""
    workdir = outdir.parent
    if source:
        # The other checkout's package (and what it finds next to itself: templates,
        # migrations), but this checkout's ``bench``: a namespace package would otherwise
        # take the other checkout's modules first.
        other = outdir / "source"
        other.mkdir()
        for entry in Path(source).iterdir():
            if entry.name != "bench":
                (other / entry.name).symlink_to(entry.resolve())
        sys.path.insert(0, str(other))
    import asyncio
    import gc

    import mirrorhub
    from bench.hotpath import bench_settings, build_app, per_call, saturated_view, view_holders
    from mirrorhub.web.redirect import Recorder

    print(f"mirrorhub from {Path(mirrorhub.__file__).parent}", file=sys.stderr)
    geo, scopes = pickle.loads((workdir / "requests.pickle").read_bytes())
    app = asyncio.run(build_app(workdir, bench_settings(workdir, geo)))
    asgi = [dict(s, asgi={"version": "3.0", "spec_version": "2.4"}, state={}) for s in scopes]
    asyncio.run(per_call(asgi, app))  # a server's first sight of each path
    fast, recorder = app.fast_redirect, app.recorder
    assert recorder is not None
    calls: list[tuple[Any, ...]] = []

    class Capture(Recorder):  # a Recorder: a compiled dispatcher checks the type
        def record(self, *args: Any) -> None:
            calls.append(args)

    app.recorder = Capture()
    answered = sum(fast(s) is not None for s in scopes)
    app.recorder = recorder
    for _ in range(WARM_PASSES):
        for s in scopes:
            fast(s)
    index = app.holder.current
    paths, positions, context = app._paths.get, index.positions.get, app.context

    def no_recorder(scope: Any) -> None:
        app.recorder = None
        fast(scope)
        app.recorder = recorder

    def without_stats(args: Any) -> None:
        stats, recorder.stats = recorder.stats, None  # type: ignore[attr-defined]
        recorder.record(*args)
        recorder.stats = stats  # type: ignore[attr-defined]

    def held_back(scope: Any) -> None:
        app.load = view
        for holder in holders:
            holder.view = view
        fast(scope)
        app.load = None
        for holder, kept in zip(holders, views, strict=True):
            holder.view = kept

    # Every mirror past its capacity (10,000 redirects/s, what wrk drives): the
    # capacity-aware pick, with the recorders adding to the view.
    view = saturated_view(app, answered * (1 + WARM_PASSES), HELD_BACK_RATE)
    holders = view_holders(app)
    views = [holder.view for holder in holders]

    feed = protocol_feed(app)
    fixed_lines = fast(scopes[0])
    floor = protocol_feed(app, lambda scope: fixed_lines)
    plain = [request_bytes(s, ()) for s in scopes]
    browser = [request_bytes(s, BROWSER_HEADERS) for s in scopes]
    stages: list[tuple[str, Any, list[Any]]] = [
        ("empty", lambda item: None, scopes),
        ("lookup", lambda s: positions(paths(s["path"])), scopes),
        ("context", lambda s: context(s, index), scopes),
        ("fast_redirect, no recorder", no_recorder, scopes),
        ("fast_redirect", fast, scopes),
        ("recorder", lambda a: recorder.record(*a), calls),
        ("recorder, no statistics", without_stats, calls),
        ("protocol, a fixed answer: no dispatcher", floor, plain),
        ("protocol: request bytes to answer", feed, plain),
        (f"protocol, {len(BROWSER_HEADERS)} more headers", feed, browser),
        # Last: its picks fill the answer caches with other mirrors' answers.
        ("fast_redirect, every mirror held back", held_back, scopes),
    ]
    gc.collect()
    gc.freeze()  # as the dispatcher does after loading its index
    pid = str(os.getpid())
    subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
    for name, fn, items in stages:
        for item in items:  # once more under instrumentation: its caches settle too
            fn(item)
        subprocess.run(["callgrind_control", "-z", pid], check=True, capture_output=True)
        for item in items:
            fn(item)
        subprocess.run(["callgrind_control", "-d", name, pid], check=True, capture_output=True)
    print(f"answered {answered} of {len(scopes)}; recorded {len(calls)}", file=sys.stderr)
    sizes = {"requests": len(scopes), "recorded": len(calls)}
    (outdir / "sizes.json").write_text(json.dumps(sizes))


# Answers per loop pass, written together (see the module docstring).
ANSWERS_PER_PASS = 15

# What a browser adds to wrk's two headers (Host, X-Forwarded-For).
BROWSER_HEADERS = (
    (b"User-Agent", b"Mozilla/5.0 (X11; Linux x86_64; rv:140.0) Gecko/20100101 Firefox/140.0"),
    (b"Accept", b"text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
    (b"Accept-Language", b"en-US,en;q=0.5"),
    (b"Accept-Encoding", b"gzip, deflate, br, zstd"),
    (b"Connection", b"keep-alive"),
    (b"Referer", b"https://www.example.org/download/"),
    (b"Upgrade-Insecure-Requests", b"1"),
    (b"Sec-Fetch-Dest", b"document"),
    (b"Sec-Fetch-Mode", b"navigate"),
    (b"Sec-Fetch-Site", b"cross-site"),
)


def request_bytes(scope: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...]) -> bytes:
    """The request ``scope`` was made from, as wrk sends it, with ``extra`` headers after."""
    lines = [b"GET " + scope["raw_path"] + b" HTTP/1.1"]
    lines += [name.title() + b": " + value for name, value in scope["headers"]]
    lines += [name + b": " + value for name, value in extra]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def protocol_feed(app: Any, fast: Any = None) -> Any:
    """``data_received`` of a ``mirrorhub serve`` connection (RedirectProtocol on a uvloop
    event loop that never runs, a transport that drops what is written): HTTP parsing, the
    protocol's callbacks, ``fast_redirect`` (or ``fast`` instead) and the write, without the
    system calls."""
    import asyncio

    import uvicorn
    from uvicorn.server import ServerState

    from mirrorhub.web.protocol import RedirectProtocol

    class Transport(asyncio.Transport):
        def get_extra_info(self, name: str, default: Any = None) -> Any:
            extra = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}
            return extra.get(name, default)

        def write(self, data: Any) -> None:
            pass

        def is_closing(self) -> bool:
            return False

    config = uvicorn.Config(
        app, http=RedirectProtocol, lifespan="off", access_log=False, proxy_headers=False
    )
    config.load()
    import uvloop  # the loop ``mirrorhub serve`` runs: its ``time()`` is C, asyncio's Python

    protocol = RedirectProtocol(  # type: ignore[no-untyped-call]
        config=config, server_state=ServerState(), app_state={}, _loop=uvloop.new_event_loop()
    )
    protocol.connection_made(Transport())
    if protocol._fast is None:
        raise SystemExit("the protocol does not answer directly: no protocol stages")
    if fast is not None:
        protocol._fast = fast
    received = protocol.data_received
    replies = getattr(protocol, "_replies", None)  # None: a checkout that writes at once
    if replies is None:
        return received
    flush = replies.flush
    fed = 0

    def feed(data: bytes) -> None:
        nonlocal fed
        received(data)
        fed += 1
        if fed == ANSWERS_PER_PASS:  # a pass ends: the server writes what it held
            flush()
            fed = 0

    return feed


def counts(outdir: Path) -> dict[str, int]:
    """Ir per dump, by the name its trigger gave it."""
    found: dict[str, int] = {}
    dumps = [p for p in outdir.glob("cg.out.*") if p.suffix[1:].isdigit()]
    for path in sorted(dumps, key=lambda p: int(p.suffix[1:])):  # in the order measured
        text = path.read_text(errors="replace")
        trigger = re.search(r"^desc: Trigger: dump (.+)$", text, re.M)
        summary = re.search(r"^summary: (\d+)", text, re.M)
        if trigger and summary:
            found[trigger.group(1).strip()] = int(summary.group(1))
    return found


def run_child(workdir: Path, source: str | None) -> dict[str, Any]:
    outdir = Path(tempfile.mkdtemp(prefix="cg-", dir=workdir))
    command = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={outdir}/cg.out",
        sys.executable,
        "-m",
        "bench.instructions",
        "--child",
        str(outdir),
    ]
    if source:
        command += ["--source", source]
    env = dict(os.environ, PYTHONHASHSEED="0")
    done = subprocess.run(command, cwd=BENCH.parent, env=env, capture_output=True, text=True)
    notes = [line for line in done.stderr.splitlines() if not line.startswith(("==", "--"))]
    if done.returncode != 0:
        raise SystemExit("the child under callgrind failed:\n" + "\n".join(notes[-20:]))
    found = counts(outdir)
    sizes = json.loads((outdir / "sizes.json").read_text())
    empty = found.pop("empty") / sizes["requests"]  # the loop and a no-op call, per item
    per_request = {}
    for name, total in found.items():
        n = sizes["recorded"] if name.startswith("recorder") else sizes["requests"]
        per_request[name] = round(total / n - empty)
    return {"source": source or str(BENCH.parent), "notes": notes, "per_request": per_request}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--baseline", help="another checkout's directory, counted too")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, default=RESULTS / "instructions.json")
    parser.add_argument(
        "--keep", type=Path, help="copy callgrind's dumps here (for callgrind_annotate)"
    )
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.source)
        return 0
    missing = [tool for tool in ("valgrind", "callgrind_control") if not shutil.which(tool)]
    if missing:
        print(f"needs {' and '.join(missing)} (Debian: apt-get install valgrind)", file=sys.stderr)
        return 2
    workdir = Path(tempfile.mkdtemp(prefix="mirrorhub-bench-instructions-"))
    try:
        setup = prepare(workdir, args.files, args.samples, args.seed)
        runs = {"this checkout": run_child(workdir, None)}
        if args.baseline:
            runs["baseline"] = run_child(workdir, args.baseline)
        if args.keep:
            for outdir in sorted(workdir.glob("cg-*")):
                shutil.copytree(outdir, args.keep / outdir.name, dirs_exist_ok=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    for name, run in runs.items():
        print(f"{name}: {' / '.join(run['notes'])}")
    print(f"\n{'instructions per request':42s}" + "".join(f"{n:>16s}" for n in runs))
    for stage in runs["this checkout"]["per_request"]:
        row = [run["per_request"].get(stage, 0) for run in runs.values()]
        print(f"{stage:42s}" + "".join(f"{v:16,d}" for v in row))
    result = {
        "benchmark": "instructions",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "setup": setup,
        "runs": runs,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):  # run as a script: make "bench" importable
        sys.path.insert(0, str(BENCH.parent))
    sys.exit(main())
