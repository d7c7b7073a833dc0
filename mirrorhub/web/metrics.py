"""``/-/metrics``: Prometheus text format, for the addresses in ``metrics_allow`` only.

Two kinds of metrics:

* counted on the hot path by :class:`RedirectMetrics` (a Recorder): redirects by outcome and
  by mirror, and the answer latency. A request costs two dict lookups, a bisect and three
  integer additions: no label formatting, no lock, no metric objects (see the class).
* read at scrape time: the in-memory index (age, size) and, from the database, the latest
  probe and scan of each mirror. Those queries read one row per mirror (and scheme) through
  the (mirror_id, time) indexes, never the whole history.

Each app has its own CollectorRegistry, so tests and several apps in one process never
share (or double-register) metrics.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from bisect import bisect_left
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from sqlalchemy import select
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mirrorhub.db.models import MirrorRow, MirrorScanRow, MirrorStateRow, ProbeResultRow
from mirrorhub.domain import Outcome
from mirrorhub.proxies import resolve_client
from mirrorhub.web.redirect import ClientContext, Recorder, Scope
from mirrorhub.web.state import AppState

log = logging.getLogger(__name__)

# The hot path answers in tens of microseconds; origin streams can take seconds.
LATENCY_BUCKETS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
    1.0, 5.0,
)  # fmt: skip
SCRAPE_DB_TIMEOUT = 5.0
SCHEMES = ("http", "https")
HEALTH_STATES = ("unknown", "up", "down")


def outcome_label(outcome: Outcome) -> str:
    return outcome.name.lower()  # mirror, origin, not_found, bad_request


class RedirectMetrics(Recorder, Collector):
    """Counts every answer of the hot path in plain Python numbers; exported at scrape time.

    prometheus-client's own Counter/Histogram children take a lock per update: measured
    here, two increments and one observation cost ~4.7 µs a request, this ~0.7 µs. The
    dispatcher, its recorders and the scrape all run on the one event-loop thread, so
    plain ``+=`` is safe. Per outcome one list holds the histogram buckets (non-cumulative)
    and, last, the sum of latencies; mirrors get one dict entry each.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        self._cells: dict[str, list[float]] = {
            o.value: [0] * (len(LATENCY_BUCKETS) + 1) + [0.0] for o in Outcome
        }
        self._mirrors: defaultdict[str, int] = defaultdict(int)
        registry.register(self)

    def record(
        self,
        outcome: Outcome,
        mirror: str | None,
        pos: int | None,
        ctx: ClientContext | None,
        scope: Scope,
        started: float,
    ) -> None:
        elapsed = time.perf_counter() - started
        cell = self._cells[outcome._value_]
        cell[bisect_left(LATENCY_BUCKETS, elapsed)] += 1
        cell[-1] += elapsed
        if mirror is not None:
            self._mirrors[mirror] += 1

    def forget_except(self, names: Iterable[str]) -> None:
        """Drop the series of mirrors that are gone (renamed or deleted)."""
        keep = set(names)
        for name in [n for n in self._mirrors if n not in keep]:
            del self._mirrors[name]

    def collect(self) -> Iterator[Metric]:
        redirects = CounterMetricFamily(
            "mirrorhub_redirects",
            "Answers of the redirect path by outcome (mirror, origin, not_found, bad_request).",
            labels=["outcome"],
        )
        latency = HistogramMetricFamily(
            "mirrorhub_redirect_duration_seconds",
            "Time to answer a published path, by outcome (origin answers include streaming).",
            labels=["outcome"],
        )
        for outcome in Outcome:
            cell = self._cells[outcome.value]
            counts = [int(n) for n in cell[:-1]]
            label = [outcome_label(outcome)]
            redirects.add_metric(label, sum(counts))
            running = 0
            buckets = []
            for bound, n in zip((*LATENCY_BUCKETS, math.inf), counts, strict=True):
                running += n
                buckets.append(("+Inf" if math.isinf(bound) else str(bound), running))
            latency.add_metric(label, buckets, cell[-1])
        by_mirror = CounterMetricFamily(
            "mirrorhub_mirror_redirects", "Redirects to each mirror.", labels=["mirror"]
        )
        for name, n in sorted(self._mirrors.items()):
            by_mirror.add_metric([name], n)
        yield from (redirects, by_mirror, latency)


# --- scrape time ------------------------------------------------------------------------------


@dataclass
class MirrorFacts:
    name: str
    enabled: bool
    health: str = "unknown"
    lagging: bool = False
    lag_seconds: float | None = None
    scan_failed: bool = False
    scan_failures: int = 0
    probe_failures: int = 0
    last_good_scan: float | None = None
    scan: tuple[float, float, bool] | None = None  # started (POSIX), duration, ok
    probes: dict[str, tuple[float, float | None, bool]] = field(default_factory=dict)


def _ts(value: datetime) -> float:
    # SQLite returns timezone-aware columns naive; they were written in UTC.
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()


async def load_facts(state: AppState) -> list[MirrorFacts]:
    """One row per mirror, its latest scan and its latest probe per scheme."""
    async with state.sessions() as session:
        rows = await session.execute(
            select(MirrorRow.id, MirrorRow.name, MirrorRow.enabled, MirrorStateRow)
            .outerjoin(MirrorStateRow, MirrorStateRow.mirror_id == MirrorRow.id)
            .order_by(MirrorRow.name)
        )
        facts: dict[int, MirrorFacts] = {}
        for mirror_id, name, enabled, st in rows.all():
            f = MirrorFacts(name, bool(enabled))
            if st is not None:
                f.health, f.lagging, f.lag_seconds = st.health, st.lagging, st.lag_seconds
                f.scan_failed, f.scan_failures = st.scan_failed, st.scan_failures
                f.probe_failures, f.last_good_scan = st.probe_failures, st.last_good_scan
            facts[mirror_id] = f
        latest_scan = (
            select(MirrorScanRow.id)
            .where(MirrorScanRow.mirror_id == MirrorRow.id)
            .order_by(MirrorScanRow.started_at.desc())
            .limit(1)
            .correlate(MirrorRow)
            .scalar_subquery()
        )
        scan_ids = [i for i in (await session.scalars(select(latest_scan))).all() if i]
        if scan_ids:
            for scan in (
                await session.scalars(select(MirrorScanRow).where(MirrorScanRow.id.in_(scan_ids)))
            ).all():
                if scan.mirror_id in facts:
                    facts[scan.mirror_id].scan = (
                        _ts(scan.started_at),
                        scan.duration_seconds,
                        scan.ok,
                    )
        probe_ids: list[int] = []
        for scheme in SCHEMES:
            latest_probe = (
                select(ProbeResultRow.id)
                .where(ProbeResultRow.mirror_id == MirrorRow.id, ProbeResultRow.scheme == scheme)
                .order_by(ProbeResultRow.at.desc())
                .limit(1)
                .correlate(MirrorRow)
                .scalar_subquery()
            )
            probe_ids.extend(i for i in (await session.scalars(select(latest_probe))).all() if i)
        if probe_ids:
            for probe in (
                await session.scalars(
                    select(ProbeResultRow).where(ProbeResultRow.id.in_(probe_ids))
                )
            ).all():
                if probe.mirror_id in facts:
                    latency = None if probe.latency_ms is None else probe.latency_ms / 1000.0
                    facts[probe.mirror_id].probes[probe.scheme] = (
                        _ts(probe.at),
                        latency,
                        probe.ok,
                    )
    return list(facts.values())


class StateCollector(Collector):
    """Index, statistics and database facts; the database part is loaded by the handler."""

    def __init__(self, state: AppState) -> None:
        self.state = state
        self.facts: list[MirrorFacts] = []
        self.database_ok = True

    def collect(self) -> Iterator[Metric]:
        state = self.state
        index = state.holder.current
        now = state.clock()
        yield _gauge("mirrorhub_index_age_seconds",
                     "Seconds since the index was last built or updated.",
                     now - index.built_at)  # fmt: skip
        yield _gauge("mirrorhub_index_files", "Files in the in-memory index.", len(index))
        yield _gauge("mirrorhub_index_mirrors", "Mirrors in the in-memory index.", len(index.slots))
        yield _gauge("mirrorhub_index_version", "Database version the index is at.",
                     index.version)  # fmt: skip
        counts = state.holder.counts
        for name, text, value in (
            ("full_builds", "Whole index builds (start-up, gaps, removed mirrors).",
             counts.full_builds),
            ("updates", "Changes applied to the live index in place.", counts.deltas),
            ("updated_files", "Files written by in-place changes.", counts.delta_files),
        ):  # fmt: skip
            family = CounterMetricFamily(f"mirrorhub_index_{name}", text)
            family.add_metric([], value)
            yield family
        yield _gauge("mirrorhub_index_last_refresh_seconds",
                     "How long the last build or in-place change took.",
                     counts.last_seconds)  # fmt: skip
        yield _gauge("mirrorhub_index_database_ok",
                     "1 when the index refresher's last database check succeeded.",
                     1 if state.holder.database_ok else 0)  # fmt: skip
        yield _gauge("mirrorhub_metrics_database_ok",
                     "1 when this scrape could read mirror facts from the database.",
                     1 if self.database_ok else 0)  # fmt: skip
        yield from self._stats(now)
        yield from _mirror_families(self.facts)

    def _stats(self, now: float) -> Iterator[Metric]:
        flusher = self.state.extras.get("stats_flusher")
        if flusher is None:
            return
        last = getattr(flusher, "last_success", None)
        if last is not None:
            yield _gauge("mirrorhub_stats_flush_lag_seconds",
                         "Seconds since download statistics were last written.",
                         max(0.0, now - last))  # fmt: skip
        for attr, name, text in (
            ("pending_downloads", "mirrorhub_stats_pending_downloads",
             "Counted downloads not yet written to the database."),
            ("failures", "mirrorhub_stats_flush_failures",
             "Consecutive failed statistics flushes."),
            ("dropped", "mirrorhub_stats_dropped_downloads",
             "Downloads dropped because the pending buffer was full."),
        ):  # fmt: skip
            value = getattr(flusher, attr, None)
            if isinstance(value, int | float):
                yield _gauge(name, text, value)


def _gauge(name: str, text: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, text, value=value)


def _mirror_families(facts: list[MirrorFacts]) -> Iterator[Metric]:
    def family(name: str, text: str, labels: tuple[str, ...] = ("mirror",)) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, text, labels=list(labels))

    enabled = family("mirrorhub_mirror_enabled", "1 when the mirror is enabled.")
    health = family("mirrorhub_mirror_health", "1 for the mirror's current health state.",
                    ("mirror", "state"))  # fmt: skip
    lagging = family("mirrorhub_mirror_lagging", "1 when the mirror lags the origin too much.")
    lag = family("mirrorhub_mirror_lag_seconds", "How far the mirror's trace file is behind.")
    probe_ok = family("mirrorhub_mirror_probe_ok", "1 when the latest probe succeeded.",
                      ("mirror", "scheme"))  # fmt: skip
    probe_latency = family("mirrorhub_mirror_probe_latency_seconds",
                           "Latency of the latest probe.", ("mirror", "scheme"))  # fmt: skip
    probe_time = family("mirrorhub_mirror_probe_timestamp_seconds",
                        "When the latest probe ran (POSIX).", ("mirror", "scheme"))  # fmt: skip
    probe_failures = family("mirrorhub_mirror_probe_consecutive_failures",
                            "Failed probe rounds in a row.")  # fmt: skip
    scan_duration = family("mirrorhub_mirror_scan_duration_seconds",
                           "Duration of the latest scan.")  # fmt: skip
    scan_ok = family("mirrorhub_mirror_scan_ok", "1 when the latest scan succeeded.")
    scan_time = family("mirrorhub_mirror_scan_timestamp_seconds",
                       "When the latest scan started (POSIX).")  # fmt: skip
    scan_failures = family("mirrorhub_mirror_scan_consecutive_failures",
                           "Failed scans in a row.")  # fmt: skip
    scan_failed = family("mirrorhub_mirror_scan_failed",
                         "1 when the mirror is excluded for failing scans.")  # fmt: skip
    good_scan = family("mirrorhub_mirror_last_good_scan_timestamp_seconds",
                       "Start of the latest good scan (POSIX).")  # fmt: skip
    for f in facts:
        m = [f.name]
        enabled.add_metric(m, 1 if f.enabled else 0)
        for st in HEALTH_STATES:
            health.add_metric([f.name, st], 1 if f.health == st else 0)
        lagging.add_metric(m, 1 if f.lagging else 0)
        if f.lag_seconds is not None:
            lag.add_metric(m, f.lag_seconds)
        probe_failures.add_metric(m, f.probe_failures)
        for scheme, (at, latency, ok) in sorted(f.probes.items()):
            probe_ok.add_metric([f.name, scheme], 1 if ok else 0)
            probe_time.add_metric([f.name, scheme], at)
            if latency is not None:
                probe_latency.add_metric([f.name, scheme], latency)
        if f.scan is not None:
            started, duration, ok = f.scan
            scan_duration.add_metric(m, duration)
            scan_ok.add_metric(m, 1 if ok else 0)
            scan_time.add_metric(m, started)
        scan_failures.add_metric(m, f.scan_failures)
        scan_failed.add_metric(m, 1 if f.scan_failed else 0)
        if f.last_good_scan is not None:
            good_scan.add_metric(m, f.last_good_scan)
    yield from (
        enabled, health, lagging, lag, probe_ok, probe_latency, probe_time, probe_failures,
        scan_duration, scan_ok, scan_time, scan_failures, scan_failed, good_scan,
    )  # fmt: skip


class Metrics:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.registry = CollectorRegistry(auto_describe=False)
        self.recorder = RedirectMetrics(self.registry)  # registers itself
        self.collector = StateCollector(state)
        self.registry.register(self.collector)
        # Concurrent scrapes must not interleave "load facts" and "render".
        self._lock = asyncio.Lock()

    def allowed(self, request: Request) -> bool:
        settings = self.state.settings
        client = resolve_client(
            request.client.host if request.client else None,
            request.scope["headers"],
            settings.trusted_proxies,
        )
        return any(client.address in net for net in settings.metrics_allow)

    async def endpoint(self, request: Request) -> Response:
        if not self.allowed(request):
            return JSONResponse(
                {"error": "metrics are not available to this address"},
                403,
                headers={"cache-control": "no-store"},
            )
        async with self._lock:
            try:
                async with asyncio.timeout(SCRAPE_DB_TIMEOUT):
                    facts = await load_facts(self.state)
                self.collector.facts, self.collector.database_ok = facts, True
            except Exception as exc:  # the in-memory metrics are worth serving regardless
                log.warning("metrics: cannot read mirror facts: %s", exc)
                self.collector.facts, self.collector.database_ok = [], False
            self.recorder.forget_except(s.mirror.name for s in self.state.holder.current.slots)
            body = generate_latest(self.registry)
        return Response(body, headers={"content-type": CONTENT_TYPE_LATEST,
                                       "cache-control": "no-store"})  # fmt: skip


def routes(state: AppState) -> list[BaseRoute]:
    metrics = Metrics(state)
    state.extras["metrics"] = metrics
    state.extras.setdefault("recorders", []).append(metrics.recorder)
    return [Route("/-/metrics", metrics.endpoint, methods=["GET"], name="metrics")]
