"""One benchmark server process: a bare ASGI app or mirrorhub, under identical uvicorn settings.

    python bench/server.py bare PORT [HEADERS_JSON]
    python bench/server.py bare-direct PORT [HEADERS_JSON]
    python bench/server.py bare-subclass PORT [HEADERS_JSON]
    python bench/server.py mirrorhub PORT SETTINGS_JSON

``bare`` answers every request with a fixed 302 (``HEADERS_JSON``: a list of [name, value]
pairs; default: Location and Content-Length only); ``bare-direct`` gives the same fixed
answer through mirrorhub's direct protocol path (the floor of that path). ``mirrorhub`` runs
``create_app(settings)``. All use the uvicorn options of ``mirrorhub serve`` (one process,
uvloop, httptools, lifespan on, no access log, no proxy headers, no server header), with
mirrorhub's direct-redirect protocol for ``mirrorhub`` and ``bare-direct`` and uvicorn's own
httptools protocol for ``bare``: the baseline owes nothing to our code. ``bare-subclass`` is
``bare`` on mirrorhub's protocol, which hands it every request (what that subclass costs a
request it does not answer).

``SETTINGS_JSON`` may hold, besides the base fields, ``"source"``: a directory whose
``mirrorhub`` package is imported instead of this checkout's (``git archive`` of another
commit: before/after comparisons in one run), ``"settings"``: more settings by name
(``{"link_alternates": "2"}``, parsed as the environment would be) and ``"experiment"``:
switches for finding where the time goes, never used by mirrorhub itself:

* ``"recorders": [class names]`` keeps only those hot-path recorders (``[]``: none);
* ``"load_sync": false`` never starts the capacity-aware load sync (no LoadView);
* ``"counters": true`` counts cache hits and misses and slow paths (wrappers add a little
  time) and prints them, with the garbage collector's figures, when the server stops
  (counted from start-up; ``kill -USR1`` starts them again, e.g. after a warm-up);
* ``"timers": true`` (or ``"cpu"``: thread CPU time instead of wall time) times the
  dispatcher's stages (context, fast pick, band lookup, the 302's start message, the
  recorders, and ``fast_redirect`` as a whole: stages nest, each timer's own cost
  inside) with ``perf_counter_ns`` around each call, to compare with the same calls
  in-process (bench/hotpath.py); reported with the counters;
* ``"stock_protocol": true`` serves mirrorhub with uvicorn's own httptools protocol
  instead of mirrorhub.web.protocol (every request through ASGI);
* ``"gc_threshold": [t0, t1, t2]`` sets the collector's thresholds once the app started;
  ``"gc_freeze": true`` freezes the heap then (``gc.freeze()``: the index and imports);
* ``"memory": true`` adds to the report, when the server stops: its resident size, again
  after a full collection and after ``malloc_trim``, and pymalloc's own figures (bytes in
  live blocks, in free blocks of its pools, in arenas): how much of the size is fragmentation;
* ``"lag_watch": {"file": PATH, "ms": 100}`` appends every thread's stack to PATH each time
  the event loop is stuck for ``ms`` (found where the wide request mix's stalls were).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]
BARE_HEADERS = [
    ["location", "http://mirror001.de.example.net/mirrorhub/pub/x/1.0/x-1.0-x86_64.iso"],
    ["content-length", "0"],
]


def uvicorn_options(stock_protocol: bool = False) -> dict[str, Any]:
    """The settings of ``mirrorhub serve`` (mirrorhub/cli/serve.py), shared by every app, plus
    a warning log level; ``stock_protocol`` swaps mirrorhub's protocol for uvicorn's own
    httptools protocol (``bare``, ``bare-full``)."""
    options: dict[str, Any] = {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
    }
    try:
        from mirrorhub.cli.serve import uvicorn_options as serve_options
    except ImportError:  # a "source" from before mirrorhub serve had its own protocol
        pass
    else:
        options = serve_options()
    options["log_level"] = "warning"
    if stock_protocol:
        options["http"] = "httptools"
    return options


def bare_app(headers: list[list[str]], direct: bool = False) -> ASGIApp:
    """``direct``: also offer ``fast_redirect`` (always the same answer), so that
    mirrorhub's protocol answers from the parser: the floor of that path, with no decision."""
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    start = {"type": "http.response.start", "status": 302, "headers": raw}
    body = {"type": "http.response.body", "body": b""}

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            if direct:  # answered by the protocol, never here: make a slip show in check_bare
                await send({**start, "status": 500})
            else:
                await send(start)
            await send(body)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    if direct:
        from mirrorhub.web.wire import lines

        ready = lines(raw)
        app.fast_redirect = lambda scope: ready  # type: ignore[attr-defined]
        app.direct_paths = _EveryPath()  # type: ignore[attr-defined]
    return app


class _EveryPath:
    """``Dispatcher.direct_paths`` for ``bare-direct``: every request target is a path the
    protocol may answer directly (without it the protocol hands every request to ASGI)."""

    def get(self, raw: bytes) -> str:
        return raw.decode("latin-1")


def mirrorhub_app(config: dict[str, Any]) -> ASGIApp:
    import dataclasses

    if config.get("source"):
        sys.path.insert(0, config["source"])

    from mirrorhub.settings import Settings, env_name, load_settings
    from mirrorhub.web.app import create_app

    settings = Settings(
        database_url=config["database_url"],
        geoip_city_db=Path(config["geoip_city_db"]),
        geoip_asn_db=Path(config["geoip_asn_db"]),
        trusted_proxies=tuple(ipaddress.ip_network(n) for n in config["trusted_proxies"]),
        origin_url=config["origin_url"],
        stats_enabled=config.get("stats_enabled", True),  # bench/stats_overhead.py --wrk
    )
    more = config.get("settings") or {}
    if more:
        parsed = load_settings({env_name(k): str(v) for k, v in more.items()})
        settings = dataclasses.replace(settings, **{k: getattr(parsed, k) for k in more})
    experiment = config.get("experiment") or {}
    if experiment.get("load_sync") is False:
        from mirrorhub.web import loadsync

        async def no_sync(*args: Any) -> None:
            return None

        loadsync._sync_loop = no_sync  # type: ignore[assignment]
    if experiment.get("counters") or experiment.get("timers"):
        _install_counters()
    if experiment.get("timers"):
        _install_timers(experiment["timers"] if isinstance(experiment["timers"], str) else "wall")
    app = create_app(settings)
    print(f"BENCH_SOURCE {sys.modules['mirrorhub'].__file__}", flush=True)
    if "recorders" in experiment:
        from mirrorhub.web.app import _fan_out

        state = app.inner.state.mirrorhub  # type: ignore[attr-defined]
        keep = set(experiment["recorders"])
        chosen = [r for r in state.extras.get("recorders", []) if type(r).__name__ in keep]
        app.recorder = _fan_out(chosen)
    global _APP, _MEMORY
    _APP = app
    _MEMORY = bool(experiment.get("memory"))
    lag_watch = experiment.get("lag_watch") or {}
    lag_out = open(lag_watch["file"], "a") if lag_watch else None  # noqa: SIM115 (for life)

    async def reset() -> None:  # count from the first request on, not the index load
        import asyncio
        import gc
        import signal

        signal.signal(signal.SIGUSR1, _reset_counts)  # after a warm-up: kill -USR1 PID
        _reset_counts()

        def tune_gc() -> None:
            if experiment.get("gc_threshold"):
                gc.set_threshold(*experiment["gc_threshold"])
            if experiment.get("gc_freeze"):
                gc.collect()
                gc.freeze()

        # after the rest of the start-up (the app sets its own threshold last)
        asyncio.get_running_loop().call_soon(tune_gc)
        if lag_out is not None:
            asyncio.get_running_loop().create_task(_watch_lag(lag_out, lag_watch.get("ms", 100)))

    async def report() -> None:  # uvicorn re-raises SIGTERM after shutdown: print here
        report_counters()

    extras = app.inner.state.mirrorhub.extras  # type: ignore[attr-defined]
    extras.setdefault("startup", []).append(reset)
    extras.setdefault("shutdown", []).insert(0, report)
    return app  # type: ignore[return-value]


_APP: Any = None
_MEMORY = False
COUNTS: dict[str, int] = {}


async def _watch_lag(out: Any, ms: float) -> None:
    """``"lag_watch": {"file": PATH, "ms": 100}``: every thread's stack, appended to PATH,
    whenever the event loop has not come back to this task for ``ms`` (faulthandler's
    watchdog thread writes it while the loop is still stuck)."""
    import asyncio
    import faulthandler

    limit = ms / 1000
    while True:
        faulthandler.dump_traceback_later(limit, file=out)
        await asyncio.sleep(0.01)
        faulthandler.cancel_dump_traceback_later()


def _count(name: str, fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        COUNTS[name] = COUNTS.get(name, 0) + 1
        return fn(*args, **kwargs)

    return wrapper


GC_PAUSES: dict[int, list[float]] = {0: [], 1: [], 2: []}


def _reset_counts(*args: Any) -> None:
    COUNTS.clear()
    for pauses in GC_PAUSES.values():
        pauses.clear()
    for cell in TIMERS.values():
        cell[0] = cell[1] = 0


TIMERS: dict[str, list[int]] = {}  # name -> [calls, total ns]


TIMER_CLOCK: list[Any] = []


def _timed(name: str, fn: Any) -> Any:
    clock = TIMER_CLOCK[0]
    cell = TIMERS.setdefault(name, [0, 0])

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            cell[0] += 1
            cell[1] += clock() - started

    return wrapper


def _timed_async(name: str, fn: Any) -> Any:
    """Wall time of a coroutine function's calls, from start to finish."""
    import time

    cell = TIMERS.setdefault(name, [0, 0])

    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter_ns()
        try:
            return await fn(*args, **kwargs)
        finally:
            cell[0] += 1
            cell[1] += time.perf_counter_ns() - started

    return wrapper


def _install_timers(kind: str) -> None:
    """``kind`` "wall" (perf_counter_ns: includes time the thread was preempted) or "cpu"
    (thread_time_ns: the thread's CPU time; a system call per reading, so the wrapper's own
    cost is measured too, as ``(no-op)``, and is to be subtracted)."""
    import time

    from mirrorhub import index, paths
    from mirrorhub.web import app as app_module
    from mirrorhub.web import redirect

    TIMER_CLOCK.append(time.thread_time_ns if kind == "cpu" else time.perf_counter_ns)
    noop = _timed("(no-op)", lambda: None)
    D = redirect.Dispatcher
    context = D.context

    def context_and_noop(*args: Any) -> Any:
        noop()
        return context(*args)

    D.context = context_and_noop  # type: ignore[method-assign]
    D.context = _timed("Dispatcher.context", D.context)  # type: ignore[method-assign]
    for name in ("redirect_start", "answer_lines"):  # the 302's headers (before / since)
        if hasattr(D, name):
            setattr(D, name, _timed(f"Dispatcher.{name}", getattr(D, name)))
    index.Index.fast_pick = _timed("Index.fast_pick", index.Index.fast_pick)
    if hasattr(index.Index, "fast_band"):
        index.Index.fast_band = _timed("Index.fast_band", index.Index.fast_band)
    D.fast_redirect = _timed("Dispatcher.fast_redirect", D.fast_redirect)  # type: ignore[method-assign]
    from mirrorhub.web import recording

    recording.HotRecorder.record = _timed(  # type: ignore[method-assign]
        "HotRecorder.record", recording.HotRecorder.record
    )
    redirect.normalize_path = _timed("normalize_path", paths.normalize_path)
    from mirrorhub.stats import flush

    # Wall time from start to end (an async call: the loop serves requests meanwhile).
    flush.StatsFlusher.flush = _timed_async(  # type: ignore[method-assign]
        "StatsFlusher.flush (wall, async)", flush.StatsFlusher.flush
    )
    fan_out = app_module._fan_out

    def timed_fan_out(recorders: list[Any]) -> Any:
        for r in recorders:
            r.record = _timed(f"{type(r).__name__}.record", r.record)
        return fan_out(recorders)

    app_module._fan_out = timed_fan_out  # type: ignore[assignment]


def _install_counters() -> None:
    """Count the calls behind each cache (a miss runs them) and the slow paths; time the
    garbage collector's pauses per generation."""
    import gc
    import time

    started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            GC_PAUSES[info["generation"]].append(time.perf_counter() - started[0])

    gc.callbacks.append(on_gc)
    from mirrorhub import index, selection
    from mirrorhub.web import redirect

    # The module that defines Index (mirrorhub/index.py, or a module of that package) calls
    # these by their global names.
    where = sys.modules[index.Index.__module__]
    for name, label in (
        ("band_walk", "band_walk (band cache miss)"),
        ("rank_mirrors", "rank_mirrors (profile cache miss)"),
        ("fast_choose", "fast_choose (allow_outdated)"),
    ):
        if hasattr(where, name):
            setattr(where, name, _count(label, getattr(where, name)))
    index.Index.decide = _count("Index.decide (full decision)", index.Index.decide)
    index.Index.fast_pick = _count("Index.fast_pick", index.Index.fast_pick)
    # pick_in_band calls it while the load view is warm, when a member is held back; it
    # lives in mirrorhub/selection/fast_path.py since the split (mirrorhub/selection.py before)
    picker = sys.modules.get("mirrorhub.selection.fast_path", selection)
    picker.weighted_pick = _count("weighted_pick (load view warm)", picker.weighted_pick)  # type: ignore[attr-defined]
    redirect.Dispatcher._new_context = _count(  # type: ignore[method-assign]
        "Dispatcher._new_context (context cache miss)", redirect.Dispatcher._new_context
    )
    if hasattr(redirect.Dispatcher, "band_answer"):
        redirect.Dispatcher.band_answer = _count(  # type: ignore[method-assign]
            "Dispatcher.band_answer (band answer cache miss)", redirect.Dispatcher.band_answer
        )
    if hasattr(picker, "_held_back_pick"):
        picker._held_back_pick = _count(  # type: ignore[attr-defined]
            "_held_back_pick (band and spill take nothing)", picker._held_back_pick
        )


def report_counters() -> None:
    import gc

    app = _APP
    out: dict[str, Any] = {"calls": COUNTS}
    if TIMERS:
        out["timers_us_per_call"] = {
            name: round(ns / calls / 1000, 2) for name, (calls, ns) in TIMERS.items() if calls
        }
    if app is not None:
        current = app.holder.current
        load = app.load
        out.update(
            index_version=current.version,
            contexts=len(app._contexts),
            profiles=len(current._profiles),
            bands=len(current._bands),
            # Ready-made 302 lines: kept on the bands (most), and per pick for the others.
            answers=len(getattr(app, "_band_answers", ())) + len(getattr(app, "_answers", ())),
            load_view_warm=None if load is None else len(load.warm),
            load_view_factors=None if load is None else len(load.factors),
        )
    out["gc_stats"] = gc.get_stats()
    out["gc_pauses_ms"] = {
        gen: {"count": len(p), "total": round(sum(p) * 1e3, 1), "max": round(max(p) * 1e3, 1)}
        for gen, p in GC_PAUSES.items()
        if p
    }
    out["gc_objects"] = len(gc.get_objects())
    if _MEMORY:
        out["memory_mb"] = memory_report()
    print("BENCH_COUNTERS " + json.dumps(out), flush=True)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS"))
    return round(kb / 1024, 1)


def _pymalloc_mb() -> dict[str, float]:
    """pymalloc's totals, from sys._debugmallocstats (which writes to the C stderr)."""
    import tempfile

    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode("ascii", "replace")
    wanted = {
        "bytes in allocated blocks": "live_blocks",
        "bytes in available blocks": "free_blocks",
        "bytes lost to pool headers": "pool_headers",
        "bytes lost to quantization": "quantization",
        "bytes lost to arena alignment": "arena_alignment",
    }
    figures: dict[str, float] = {}
    for line in text.splitlines():
        name, _, value = line.partition("=")
        name = name.strip().lstrip("# ")
        if name in wanted or name == "arenas allocated current" or "unused pools" in name:
            number = int(value.strip().replace(",", ""))
            if name == "arenas allocated current":
                figures["arenas_mb"] = float(number)  # 1 MiB each
            else:
                figures[wanted.get(name, "unused_pools")] = round(number / 2**20, 1)
    return figures


def memory_report() -> dict[str, Any]:
    import ctypes
    import gc

    out: dict[str, Any] = {"rss": _rss_mb(), "pymalloc": _pymalloc_mb()}
    gc.collect()
    out["rss_collected"] = _rss_mb()
    ctypes.CDLL(None).malloc_trim(0)
    out["rss_trimmed"] = _rss_mb()
    out["pymalloc_after"] = _pymalloc_mb()
    return out


def main(argv: list[str]) -> int:
    kind, port = argv[0], int(argv[1])
    if kind in ("bare", "bare-direct", "bare-subclass"):
        headers = json.loads(argv[2]) if len(argv) > 2 else BARE_HEADERS
        app = bare_app(headers, kind == "bare-direct")
    elif kind == "mirrorhub":
        app = mirrorhub_app(json.loads(argv[2]))
    else:
        raise SystemExit(f"unknown app {kind!r}")
    if os.environ.get("BENCH_GC_DISABLE"):  # experiment: is garbage collection the cost?
        import gc

        gc.disable()
    stock = kind == "bare" or (
        kind == "mirrorhub"
        and bool((json.loads(argv[2]).get("experiment") or {}).get("stock_protocol"))
    )
    uvicorn.run(app, host="127.0.0.1", port=port, **uvicorn_options(stock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
