"""The fused hot-path recorder leaves exactly what the three recorders called one by one do."""

from __future__ import annotations

import copy
import ipaddress
import math
import random
import sys
import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from mirrorhub.domain import Client, Health, Location, Mirror, MirrorState, Options, Outcome
from mirrorhub.index import IndexConfig, IndexHolder, IndexSource, build_index
from mirrorhub.load import HARD, SOFT, LoadEstimator, LoadView, make_view
from mirrorhub.selection import Band
from mirrorhub.stats.counter import DAY_SECONDS, StatsCounter
from mirrorhub.web.loadsync import LoadRecorder
from mirrorhub.web.metrics import RedirectMetrics
from mirrorhub.web.recording import FanOut, HotRecorder, combine
from mirrorhub.web.redirect import ClientContext, Recorder
from mirrorhub.web.wire import NOTED, NOTED_HEADERS

UP = MirrorState(Health.UP, last_good_scan=1000.0)
MIRRORS = [Mirror(i, f"m{i}", f"http://m{i}.example/", None, capacity=100) for i in range(1, 5)]
CONFIG = IndexConfig(Band(1.5, 500), 4, 100, ())
LATENCIES = (0.00002, 0.00005, 0.00007, 0.0001, 0.0002, 0.003, 2.0)  # bounds included


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def index(version: int, offset: int) -> Any:
    files = [(i, f"pub/f{i}.iso", 1_000_000 * (i + 1), 1, None, 10.0) for i in range(offset, 40)]
    return build_index(IndexSource(version, [(m, UP) for m in MIRRORS], files, []), CONFIG)


class Set:
    """The three recorders of one app, on shared holder and clocks."""

    def __init__(
        self, holder: IndexHolder, wall: Clock, mono: Clock, soft: float = SOFT, hard: float = HARD
    ) -> None:
        self.stats = StatsCounter(holder, range_window=30.0, max_clients=25, clock=wall)
        state: Any = SimpleNamespace(holder=holder)
        self.load = LoadRecorder(state, LoadEstimator(window=20.0, step=1.0, clock=mono))
        capacities = {m.name: 100 for m in MIRRORS}
        self.load.view = LoadView({}, {}, capacities, window=20.0, soft=soft, hard=hard)
        self.metrics = RedirectMetrics(CollectorRegistry())


def new_view(rng: random.Random, local: dict[str, float], soft: float, hard: float) -> LoadView:
    """A view as the load sync makes it (the rest of the fleet at one of a few loads around
    the capacity of 100), or now and then one whose stopped mirrors are below the hard limit
    (only a view built by hand has those)."""
    capacities = {m.name: 100 for m in MIRRORS}
    if rng.random() < 0.3:
        mbps = {m.name: rng.choice((90.0, 100.0, 110.0)) for m in MIRRORS}
        return LoadView(dict.fromkeys(mbps, 0.0), mbps, capacities, 20.0, soft, hard)
    others = {m.name: rng.choice((0.0, 30.0, 95.0, 99.0, 120.0, 200.0)) for m in MIRRORS}
    return make_view(local, others, capacities, soft, hard, window=20.0)


def state_of(s: Set) -> dict[str, Any]:
    samples = {}
    for family in s.metrics.collect():
        for sample in family.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            samples[key] = round(sample.value, 6)
    return {
        "days": [(d.day, d.files, d.mirrors, d.countries) for d in s.stats.swap()],
        "counted": (s.stats.counted, s.stats.deduplicated, s.stats.lost, s.stats.errors),
        "remembered": s.stats.remembered,
        "estimate": {m: round(v, 9) for m, v in s.load.estimate().items()},
        "view": (
            s.load.view.mbps,
            s.load.view.factors,
            s.load.view.warm,
            s.load.view.stopped,
            s.load.view.below_capacity,
        ),
        "metrics": samples,
    }


@pytest.mark.parametrize("seed", range(12))
def test_fused_recorder_equals_the_recorders_one_by_one(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    perf = Clock(100.0)  # the latency clock both read
    monkeypatch.setattr(time, "perf_counter", perf)
    rng = random.Random(seed)
    wall = Clock(DAY_SECONDS * 20_000 - 40.0)  # the run crosses a UTC midnight
    mono = Clock(500.0)
    holder = IndexHolder(index(1, 0))
    # A soft limit below WARM on odd seeds: the fused recorder's in-line LoadView.add must
    # then hold mirrors back below the watch level too. A hard limit past 100 % on every
    # third: a mirror past its capacity is then not always stopped, which the in-line
    # shortcut for stopped mirrors must tell.
    soft = 0.2 if seed % 2 else SOFT
    hard = 1.5 if seed % 3 == 2 else HARD
    one_by_one, fused = Set(holder, wall, mono, soft, hard), Set(holder, wall, mono, soft, hard)
    separate: Recorder = FanOut([one_by_one.load, one_by_one.stats, one_by_one.metrics])
    hot = combine([fused.load, fused.stats, fused.metrics])
    assert isinstance(hot, HotRecorder)
    clients = [
        Client(ipaddress.ip_address(f"192.0.2.{i}"), Location(country=rng.choice(["DE", None])))
        for i in range(12)
    ]
    contexts: dict[tuple[int, int], ClientContext] = {}
    for step in range(600):
        # 30.0: just out of the dedup window (a repeat then counts again)
        wall.now += rng.choice((0.0, 0.01, 0.3, 2.0, 30.0)) if rng.random() < 0.5 else 0.0
        mono.now += rng.choice((0.0, 0.0, 0.0, 0.05, 0.4, 1.0))
        if rng.random() < 0.01:  # a full rebuild: other positions for the same files
            holder.current = index(holder.current.version + 1, rng.randrange(3))
        current = holder.current
        version = current.version if rng.random() < 0.95 else current.version - 1
        c = rng.randrange(len(clients) if rng.random() < 0.3 else 3)
        ctx = contexts.get((c, version))
        if ctx is None:
            ctx = ClientContext(version, clients[c], Options(), None, None)  # type: ignore[arg-type]
            contexts[(c, version)] = ctx
        pos = rng.randrange(len(current) if rng.random() < 0.2 else 4)  # repeats: dedup
        outcome = rng.choice([Outcome.MIRROR] * 8 + [Outcome.ORIGIN, Outcome.NOT_FOUND])
        mirror = rng.choice(MIRRORS).name if outcome is Outcome.MIRROR else None
        headers = [(b"host", b"dl.example")]
        if rng.random() < 0.5:
            headers.append((b"range", b"bytes=0-"))
        if rng.random() < 0.5:
            headers.insert(rng.randrange(len(headers) + 1), (b"user-agent", b"x"))
        scope: dict[str, Any] = {"method": rng.choice(["GET", "GET", "HEAD"]), "headers": headers}
        if rng.random() < 0.5:  # as mirrorhub.web.protocol passes them; the others read all
            scope[NOTED] = [h for h in headers if h[0] in NOTED_HEADERS]
        if rng.random() < 0.9:
            scope["path"] = "/" + current.paths[pos]
        args: tuple[Any, ...] = (outcome, mirror, pos, ctx, scope)
        if outcome is Outcome.NOT_FOUND:
            args = (outcome, None, None, ctx, scope)
        if rng.random() < 0.02:  # the load sync's new view, the same for both
            view = new_view(rng, one_by_one.load.estimate(), soft, hard)
            one_by_one.load.view, fused.load.view = view, copy.deepcopy(view)
        perf.now += 1.0
        started = perf.now - rng.choice(LATENCIES)
        separate.record(*args, started)
        hot.record(*args, started)
        if step % 97 == 0:  # the flusher and the load sync read in between
            assert state_of(one_by_one) == state_of(fused)
    assert hot.errors == 0
    assert state_of(one_by_one) == state_of(fused)
    assert one_by_one.stats.counted > 100 and one_by_one.stats.deduplicated > 10


@pytest.mark.parametrize("mbps", [100.0, 149.0, 150.0, 200.0])
def test_a_stopped_mirror_past_capacity_is_recorded_as_loadview_add_records_it(
    mbps: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(time, "perf_counter", Clock(100.0))
    # A view built by hand: m1 held back entirely at 100-149 % of its capacity, under a hard
    # limit of 150 %. LoadView.add works its factor out again (> 0 below the hard limit), so
    # the fused recorder may only store the estimate where that factor stays 0.
    holder = IndexHolder(index(1, 0))
    wall, mono = Clock(DAY_SECONDS * 20_000.0), Clock(500.0)
    one_by_one, fused = Set(holder, wall, mono), Set(holder, wall, mono)
    capacities = {m.name: 100 for m in MIRRORS}
    for s in (one_by_one, fused):
        s.load.view = LoadView({"m1": 0.0}, {"m1": mbps}, capacities, 20.0, SOFT, 1.5)
    ctx = ClientContext(1, Client(ipaddress.ip_address("192.0.2.1")), Options(), None, None)  # type: ignore[arg-type]
    args = (Outcome.MIRROR, "m1", 0, ctx, {"method": "GET", "headers": [], "path": "/pub/f0.iso"})
    FanOut([one_by_one.load, one_by_one.stats, one_by_one.metrics]).record(*args, 99.9)
    hot = combine([fused.load, fused.stats, fused.metrics])
    assert hot is not None
    hot.record(*args, 99.9)
    assert state_of(one_by_one) == state_of(fused)
    # 1 MB in a 20-s window: +0.4 Mbit/s; below 150 % the factor comes back above 0.
    assert ("m1" in fused.load.view.stopped) == (mbps + 0.4 >= 150.0)


def test_combine_fuses_only_what_it_knows() -> None:
    holder = IndexHolder(index(1, 0))
    s = Set(holder, Clock(0.0), Clock(0.0))
    assert combine([]) is None
    assert combine([s.metrics]) is s.metrics
    assert isinstance(combine([s.stats, s.metrics]), FanOut)  # no load recorder
    hot = combine([s.load, s.metrics])  # statistics switched off
    assert isinstance(hot, HotRecorder) and hot.stats is None

    class Other(Recorder):
        def __init__(self) -> None:
            self.calls = 0

        def record(self, *args: Any) -> None:
            self.calls += 1

    other = Other()
    hot = combine([s.load, s.stats, s.metrics, other])
    assert isinstance(hot, HotRecorder)
    ctx = ClientContext(1, Client(ipaddress.ip_address("192.0.2.1")), Options(), None, None)  # type: ignore[arg-type]
    hot.record(Outcome.MIRROR, "m1", 0, ctx, {"method": "GET", "headers": []}, 0.0)
    hot.record(Outcome.NOT_FOUND, None, None, ctx, {"method": "GET", "headers": []}, 0.0)
    assert other.calls == 2


def test_the_fused_recorder_never_raises() -> None:
    holder = IndexHolder(index(1, 0))
    s = Set(holder, Clock(0.0), Clock(0.0))
    hot = combine([s.load, s.stats, s.metrics])
    assert isinstance(hot, HotRecorder)
    hot.record(Outcome.MIRROR, "m1", 0, object(), {}, 0.0)  # type: ignore[arg-type]
    assert hot.errors == 1


@pytest.mark.skipif(sys.platform == "win32", reason="perf_counter is another clock there")
def test_on_the_default_clocks_the_latency_read_dates_the_load_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the estimator on time.monotonic, the fused recorder takes the load step's time
    from the latency clock's read (the same clock) instead of reading the clock again."""
    holder = IndexHolder(index(1, 0))
    load = LoadRecorder(SimpleNamespace(holder=holder), LoadEstimator(window=20.0, step=1.0))  # type: ignore[arg-type]
    load.view = LoadView({}, {}, {m.name: 100 for m in MIRRORS}, window=20.0)
    stats = StatsCounter(holder)
    hot = combine([load, stats, RedirectMetrics(CollectorRegistry())])
    assert isinstance(hot, HotRecorder) and hot._load_on_perf_counter
    ctx = ClientContext(1, Client(ipaddress.ip_address("192.0.2.1")), Options(), None, None)  # type: ignore[arg-type]
    scope = {"method": "GET", "headers": [], "path": "/" + holder.current.paths[0]}
    hot.record(Outcome.MIRROR, "m1", 0, ctx, scope, time.perf_counter())  # opens a step
    load.step_end = math.inf  # however slow this machine is, the next record is in the step
    reads: list[float] = []
    monotonic = load.clock
    load.clock = lambda: reads.append(monotonic()) or reads[-1]  # type: ignore[method-assign]
    separately: list[Any] = []
    monkeypatch.setattr(hot, "_separately", lambda *args: separately.append(args))
    before = load.pending.get("m1", 0)
    hot.record(Outcome.MIRROR, "m1", 0, ctx, scope, time.perf_counter())
    assert separately == [] and hot.errors == 0 and reads == []
    assert load.pending["m1"] == before + holder.current.sizes[0]
