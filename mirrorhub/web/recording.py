"""One recorder for the hot path: statistics, load estimate and metrics in a single call.

The app registers three :class:`~mirrorhub.web.redirect.Recorder` objects (the statistics
counter, the load recorder, the redirect metrics). Called one after the other they cost three
calls, three reads of the same arguments and a second clock read or index lookup each; at
~10,000 redirects/s that was a quarter of the dispatcher's own time. :class:`HotRecorder`
does what the three do, in one function, for the common case — a redirect to a mirror whose
client context belongs to the index the statistics counter is counting for, within the
current day and load step — and hands everything else to the three recorders' own
``record`` methods, which stay the reference (``tests/web/test_recording.py`` holds the two
equal over random request sequences).

It writes into the metrics', the load recorder's and the statistics counter's state directly
(what ``StatsCounter.repeats`` and ``count`` do, inlined; same package, same thread: the
event loop's), so whatever reads them — the statistics flush, the metrics scrape, the load sync,
the next pick's view — sees exactly what the three separate calls would have left.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Sequence
from typing import Any

from mirrorhub.domain import Outcome
from mirrorhub.load import WARM as _WARM
from mirrorhub.stats.counter import StatsCounter
from mirrorhub.web.loadsync import LoadRecorder
from mirrorhub.web.metrics import LATENCY_BUCKETS, RedirectMetrics
from mirrorhub.web.redirect import ClientContext, Recorder, Scope
from mirrorhub.web.wire import NOTED as _NOTED

_MIRROR = Outcome.MIRROR
_FIRST_BUCKET = LATENCY_BUCKETS[0]
_SECOND_BUCKET = LATENCY_BUCKETS[1]


def _perf_counter_is_monotonic() -> bool:
    perf, mono = time.get_clock_info("perf_counter"), time.get_clock_info("monotonic")
    return perf.implementation == mono.implementation


class FanOut(Recorder):
    """Several recorders, called in turn (any mix the hot recorder does not cover)."""

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        self.recorders = tuple(recorders)

    def record(self, *args: Any) -> None:
        for recorder in self.recorders:
            recorder.record(*args)


class HotRecorder(Recorder):
    """The statistics counter (optional), the load recorder and the redirect metrics, fused;
    ``others`` are called after them. See the module docstring."""

    def __init__(
        self,
        stats: StatsCounter | None,
        load: LoadRecorder,
        metrics: RedirectMetrics,
        others: Sequence[Recorder] = (),
    ) -> None:
        self.stats = stats
        self.load = load
        self.metrics = metrics
        self.others = tuple(others)
        self.holder = load.state.holder
        # The estimator's default clock is the one perf_counter reads (CLOCK_MONOTONIC on
        # Linux): then the metrics' end time is also the load step's time, one read fewer.
        self._load_on_perf_counter = load.clock is time.monotonic and _perf_counter_is_monotonic()
        self._mirror_cell = metrics._cells[_MIRROR._value_]
        self._separate = [r for r in (stats, load, metrics) if r is not None] + list(others)
        self.errors = 0

    def record(
        self,
        outcome: Outcome,
        mirror: str | None,
        pos: int | None,
        ctx: ClientContext | None,
        scope: Scope,
        started: float,
    ) -> None:
        try:
            if outcome is not _MIRROR or mirror is None or pos is None or ctx is None:
                self._separately(outcome, mirror, pos, ctx, scope, started)
                return
            end = time.perf_counter()
            elapsed = end - started
            index = self.holder.current
            load = self.load
            now = end if self._load_on_perf_counter else load.clock()
            stats = self.stats
            counted = stats is not None and scope["method"] == "GET"
            day_now = 0.0
            if counted and stats is not None:
                day_now = stats._clock()
                if (
                    day_now >= stats._day_end
                    or index is not stats._index
                    or index is not stats._by_pos_index
                ):
                    self._separately(outcome, mirror, pos, ctx, scope, started)
                    return
            if ctx.version != index.version or not load.step_start <= now < load.step_end:
                self._separately(outcome, mirror, pos, ctx, scope, started)
                return
            # Metrics (RedirectMetrics.record): the fast path answers within 100 us.
            cell = self._mirror_cell
            if elapsed <= _FIRST_BUCKET:
                cell[0] += 1
            elif elapsed <= _SECOND_BUCKET:
                cell[1] += 1
            else:
                cell[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
            cell[-1] += elapsed
            self.metrics._mirrors[mirror] += 1
            # Load (LoadRecorder.add, within the current step).
            size = index.sizes[pos]
            load.pending[mirror] += size
            # LoadView.add, in line while the mirror is below both the watch and the soft
            # limit (the usual case: only the new estimate is stored), or while it is held
            # back entirely, past its capacity already and past the hard limit after this
            # file (an overloaded fleet: add would find it watched, stopped and out of
            # below_capacity, work out a factor of 0 again and store only the estimate).
            view = load.view
            capacity = view.capacities.get(mirror)
            if capacity:
                before = view.mbps.get(mirror, 0.0)
                mbps = before + size * 8 / 1e6 / view.window
                if (mbps < _WARM * capacity and mbps / capacity <= view.soft) or (
                    before >= capacity and mbps >= view.hard * capacity and mirror in view.stopped
                ):
                    view.mbps[mirror] = mbps
                else:
                    view.add(mirror, size)
            if counted and stats is not None:  # Statistics (StatsCounter.record).
                client = ctx.client
                key = id(client) ^ hash(scope.get("path") or "/" + index.paths[pos])
                # StatsCounter.repeats, then .count with its two _add calls, inlined: under
                # wrk, py-spy put a quarter of the recorders' samples on their call lines.
                # Only a ranged request can repeat: the others skip the lookups.
                seen = stats._seen
                repeat = False
                headers = scope.get(_NOTED)  # the protocol's noted headers, if it passed them
                if headers is None:
                    headers = scope["headers"]
                for header in headers:
                    if header[0] == b"range":
                        last = seen.get(key)
                        if last is None:
                            last = stats._seen_before.get(key)
                        repeat = last is not None and day_now - last < stats._window
                        break
                if len(seen) >= stats._generation and key not in seen:
                    stats._seen_before, stats._before_newest = seen, stats._newest
                    stats._seen = seen = {}
                seen[key] = day_now
                stats._newest = day_now
                if repeat:
                    stats.deduplicated += 1
                else:
                    stats.counted += 1
                    stats._by_pos[pos] += 1
                    counts = stats._mirrors.get(mirror)
                    if counts is None:
                        stats._mirrors[mirror] = [1, size]
                    else:
                        counts[0] += 1
                        counts[1] += size
                    country = client.location.country
                    counts = stats._countries.get(country)
                    if counts is None:
                        stats._countries[country] = [1, size]
                    else:
                        counts[0] += 1
                        counts[1] += size
            if self.others:
                for other in self.others:
                    other.record(outcome, mirror, pos, ctx, scope, started)
        except Exception:  # recorders must never break an answer already sent
            self.errors += 1

    def _separately(self, *args: Any) -> None:
        for recorder in self._separate:
            recorder.record(*args)


def combine(recorders: Sequence[Recorder]) -> Recorder | None:
    """One recorder for the hot path, however many features registered one: the fused
    :class:`HotRecorder` when the load recorder and the redirect metrics are among them (with
    at most one statistics counter), else a plain fan-out."""
    if not recorders:
        return None
    if len(recorders) == 1:
        return recorders[0]
    stats = [r for r in recorders if type(r) is StatsCounter]
    load = [r for r in recorders if type(r) is LoadRecorder]
    metrics = [r for r in recorders if type(r) is RedirectMetrics]
    if len(load) == 1 and len(metrics) == 1 and len(stats) <= 1:
        others = [r for r in recorders if r not in (*stats, *load, *metrics)]
        return HotRecorder(stats[0] if stats else None, load[0], metrics[0], others)
    return FanOut(recorders)
