"""Download statistics: the hot-path counter, its flush task, and the pages under /-/stats.

``routes(state)`` registers the :class:`~mirrorhub.stats.counter.StatsCounter` as a hot-path
recorder and the flush loop as a start-up/shutdown hook (the last counts are flushed on
shutdown), and keeps both in ``state.extras["stats"]`` (a :class:`StatsService`); the
metrics read the flusher from ``state.extras["stats_flusher"]`` (``last_success``,
``pending_downloads``, ``failures``, ``dropped``).

Routes (``days`` = 1..366, default 30; ``limit`` = 1..1000 top files, default 20):

- ``/-/stats``: HTML with SVG charts (top files, per mirror, per country, per day, per month)
- ``/-/stats.json``: everything the page shows
- ``/-/stats/files.json``, ``mirrors.json``, ``countries.json``, ``days.json``,
  ``months.json``: one part each

Aggregates are cached for a few seconds so a busy page does not become a database load.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mirrorhub.stats import queries
from mirrorhub.stats.counter import StatsCounter
from mirrorhub.stats.flush import StatsFlusher
from mirrorhub.web.charts import bar_chart, line_chart
from mirrorhub.web.state import AppState
from mirrorhub.web.templating import make_templates

CACHE_SECONDS = 10.0
CACHE_ENTRIES = 64
DEFAULT_DAYS = 30
DEFAULT_LIMIT = 20
CHART_BARS = 15
_NO_STORE = {"cache-control": "no-store"}
_SHORT_CACHE = {"cache-control": "public, max-age=10"}


class BadParameter(ValueError):
    pass


@dataclass
class StatsService:
    """This dispatcher's live statistics objects (``state.extras["stats"]``)."""

    counter: StatsCounter
    flusher: StatsFlusher
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def live(self, now: float) -> dict[str, Any]:
        """Process-local figures: what is counted but not yet in the database."""
        f = self.flusher
        return {
            "pending_rows": f.pending_rows,
            "pending_downloads": f.pending_downloads,
            "dropped_downloads": f.dropped,
            "flushed_downloads": f.flushed,
            "counted_downloads": self.counter.counted,
            "deduplicated_ranges": self.counter.deduplicated,
            "failed_flushes": f.failures,
            "last_flush_age_seconds": (
                round(now - f.last_success, 1) if f.last_success is not None else None
            ),
            "last_error": f.last_error,
        }


def int_param(request: Request, name: str, default: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise BadParameter(f"{name} must be a whole number from 1 to {high}")
    return int(raw)


class _Cache:
    """A tiny TTL cache of query results, keyed by the request's parameters."""

    def __init__(self) -> None:
        self._items: dict[tuple[object, ...], tuple[float, Any]] = {}

    async def get(self, key: tuple[object, ...], make: Callable[[], Awaitable[Any]]) -> Any:
        now = time.monotonic()
        hit = self._items.get(key)
        if hit is not None and now - hit[0] < CACHE_SECONDS:
            return hit[1]
        value = await make()
        if len(self._items) >= CACHE_ENTRIES:
            self._items.clear()
        self._items[key] = (now, value)
        return value


def charts(s: queries.Summary) -> dict[str, Markup]:
    """SVG charts for a summary (pure; every label is escaped by mirrorhub.web.charts)."""
    files = [(t.key, float(t.downloads)) for t in s.files[:CHART_BARS]]
    mirrors = [(t.key or "(origin)", float(t.downloads)) for t in s.mirrors[:CHART_BARS]]
    countries = [(t.key or "(unknown)", float(t.downloads)) for t in s.countries[:CHART_BARS]]
    points = [(float(i), float(d.downloads)) for i, d in enumerate(s.days)]
    step = max(1, len(s.days) // 6)
    labels = [(float(i), d.day.strftime("%m-%d")) for i, d in enumerate(s.days)][::step]
    return {
        "files": bar_chart(files, title="Top files by downloads"),
        "mirrors": bar_chart(mirrors, title="Downloads per mirror"),
        "countries": bar_chart(countries, title="Downloads per client country"),
        "days": line_chart(
            [("downloads", points)], x_labels=labels, y_label="downloads", title="Downloads per day"
        ),
    }


def months_chart(months: list[queries.DayTotal]) -> Markup:
    points = [(float(i), float(m.downloads)) for i, m in enumerate(months)]
    step = max(1, len(months) // 8)
    labels = [(float(i), m.day.strftime("%Y-%m")) for i, m in enumerate(months)][::step]
    return line_chart(
        [("downloads", points)], x_labels=labels, y_label="downloads", title="Downloads per month"
    )


def routes(state: AppState) -> list[BaseRoute]:
    settings = state.settings
    service: StatsService | None = None
    if settings.stats_enabled:
        counter = StatsCounter(
            state.holder,
            range_window=settings.stats_range_window_seconds,
            max_clients=settings.stats_range_clients,
            clock=state.clock,
        )
        flusher = StatsFlusher(
            counter,
            state.sessions,
            interval=settings.stats_flush_seconds,
            buffer_rows=settings.stats_buffer_rows,
            clock=state.clock,
        )
        service = StatsService(counter, flusher)
        state.extras["stats"] = service
        state.extras["stats_flusher"] = flusher  # read by mirrorhub.web.metrics
        state.extras.setdefault("recorders", []).append(counter)

        async def start() -> None:
            assert service is not None
            service.stop.clear()
            service.task = asyncio.create_task(flusher.run(service.stop))

        async def stop() -> None:
            assert service is not None
            service.stop.set()
            if service.task is not None:
                with contextlib.suppress(Exception):
                    await service.task  # its last flush writes what is left

        state.extras.setdefault("startup", []).append(start)
        state.extras.setdefault("shutdown", []).append(stop)

    templates = make_templates()
    cache = _Cache()

    def period(request: Request) -> queries.Period:
        days = int_param(request, "days", DEFAULT_DAYS, queries.MAX_DAYS)
        return queries.Period.last_days(days, state.clock())

    async def load_summary(p: queries.Period, limit: int) -> queries.Summary:
        async def make() -> queries.Summary:
            async with state.sessions() as session:
                return await queries.summary(session, p, limit)

        result: queries.Summary = await cache.get(("summary", p, limit), make)
        return result

    async def load_months() -> list[queries.DayTotal]:
        async def make() -> list[queries.DayTotal]:
            async with state.sessions() as session:
                return await queries.per_month(session)

        result: list[queries.DayTotal] = await cache.get(("months",), make)
        return result

    def live() -> dict[str, Any] | None:
        return service.live(state.clock()) if service is not None else None

    async def page(request: Request) -> Response:
        try:
            p = period(request)
            limit = int_param(request, "limit", DEFAULT_LIMIT, queries.MAX_LIMIT)
        except BadParameter as exc:
            return Response(f"bad request: {exc}\n", 400, media_type="text/plain")
        error = None
        summary = queries.Summary(p, 0, 0, [], [], [], queries.fill_days(p, {}))
        months: list[queries.DayTotal] = []
        try:
            summary = await load_summary(p, limit)
            months = await load_months()
        except Exception as exc:  # database away: say so, never 500
            error = type(exc).__name__
        return templates.TemplateResponse(
            request,
            "stats.html",
            {
                "s": summary,
                "charts": charts(summary),
                "months": months,
                "months_chart": months_chart(months) if months else None,
                "limit": limit,
                "raw_days": settings.stats_raw_days,
                "live": live(),
                "error": error,
                "day_choices": (1, 7, 30, 90, 365),
            },
            status_code=503 if error else 200,
            headers=_NO_STORE,
        )

    async def as_json(request: Request, part: str) -> Response:
        try:
            p = period(request)
            limit = int_param(request, "limit", DEFAULT_LIMIT, queries.MAX_LIMIT)
        except BadParameter as exc:
            return JSONResponse({"error": str(exc)}, 400, headers=_NO_STORE)
        try:
            if part == "months":
                body: Any = {"per_month": queries.series_json(await load_months(), "month")}
            else:
                s = await load_summary(p, limit)
                full = s.to_json()
                if part == "all":
                    full["live"] = live()
                    body = full
                else:
                    key = {"days": "per_day"}.get(part, part)
                    body = {k: full[k] for k in ("from", "to", "days", key)}
        except Exception as exc:  # database away
            return JSONResponse(
                {"error": f"statistics unavailable: {type(exc).__name__}"}, 503, headers=_NO_STORE
            )
        return JSONResponse(body, headers=_SHORT_CACHE)

    async def all_json(request: Request) -> Response:
        return await as_json(request, "all")

    async def part_json(request: Request) -> Response:
        part = request.path_params["part"]
        if part not in ("files", "mirrors", "countries", "days", "months"):
            return JSONResponse({"error": "not found"}, 404, headers=_NO_STORE)
        return await as_json(request, part)

    return [
        Route("/-/stats", page),
        Route("/-/stats.json", all_json),
        Route("/-/stats/{part}.json", part_json),
    ]
