"""Public pages, no sign-in: the mirror-health page, its JSON and the map.

Routes: ``/-/`` (redirects to the status page), ``/-/status`` (HTML), ``/-/api/status``
(JSON), ``/-/map.svg`` (the map alone). The model comes from :class:`StatusCache`: computed on
demand, kept for :data:`CACHE_SECONDS`, and once a model exists a stale one is served while a
background task builds the next, so no page view waits for the database after the first and
the redirect path never runs any of it.

Each mirror's load (:func:`mirrorhub.load.mirror_load`) is not cached with the model: it is
read from the dispatcher's current :class:`~mirrorhub.load.LoadView`
(``state.extras["load_view"]``, swapped in by :mod:`mirrorhub.web.loadsync`) at every view,
so it is as fresh as the last load sync. This module also hands that view to the per-file
views (``?mirrorlist``, ``?json``) of :mod:`mirrorhub.web.views` once the dispatcher exists.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from markupsafe import Markup
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from mirrorhub.load import LoadView, mirror_load
from mirrorhub.status import (
    SEVERITY,
    SORT_KEYS,
    MirrorStatus,
    Status,
    StatusModel,
    countries,
    select_rows,
    to_json,
)
from mirrorhub.status_query import StatusSource
from mirrorhub.web.charts import sparkline
from mirrorhub.web.state import AppState
from mirrorhub.web.templating import make_templates
from mirrorhub.web.views import Views
from mirrorhub.worldmap import Dot, world_map

log = logging.getLogger(__name__)

CACHE_SECONDS = 5.0
JSON_CACHE_CONTROL = "public, max-age=5"
STATUS_VALUES = frozenset(s.value for s in Status)


class StatusCache:
    """The latest :class:`StatusModel`, rebuilt at most every ``ttl`` seconds."""

    def __init__(
        self,
        source: StatusSource,
        ttl: float = CACHE_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self.ttl = ttl
        self.monotonic = monotonic
        self.model: StatusModel | None = None
        self.built = 0.0
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None

    async def get(self) -> StatusModel:
        model = self.model
        if model is not None:
            if self.monotonic() - self.built >= self.ttl and (
                self._task is None or self._task.done()
            ):
                self._task = asyncio.create_task(self._refresh_logged())
            return model
        async with self._lock:  # the first views wait for one build, not one each
            if self.model is None:
                await self._refresh()
        assert self.model is not None
        return self.model

    def warm(self) -> None:
        """Start building the first model in the background (at start-up)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._refresh_logged())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _refresh(self) -> None:
        model = await self.source.build()
        self.model, self.built = model, self.monotonic()

    async def _refresh_logged(self) -> None:
        try:
            async with self._lock:
                await self._refresh()
        except (SQLAlchemyError, OSError) as exc:
            # Keep serving the last model; the next view tries again.
            log.warning("status page refresh failed: %s", exc)
            self.built = self.monotonic()
        except Exception:  # a bug must not kill the refresher silently either
            log.exception("status page refresh failed")
            self.built = self.monotonic()


def _filters(request: Request) -> dict[str, Any]:
    """Query parameters, validated: anything unexpected is ignored, never echoed raw."""
    q = request.query_params
    status = q.get("status", "")
    country = q.get("country", "").strip().upper()
    sort = q.get("sort", "name")
    return {
        "status": status if status in STATUS_VALUES else "",
        "country": country if len(country) == 2 and country.isalpha() else "",
        "sort": sort if sort in SORT_KEYS else "name",
        "descending": q.get("order") == "desc",
        "q": q.get("q", "").strip()[:64],
    }


def _rows(model: StatusModel, f: dict[str, Any]) -> list[MirrorStatus]:
    rows = select_rows(
        model, status=f["status"], country=f["country"], sort=f["sort"], descending=f["descending"]
    )
    needle = f["q"].lower()
    return [r for r in rows if needle in r.name.lower()] if needle else rows


def _dots(rows: list[MirrorStatus]) -> list[Dot]:
    # Worst last, so a down mirror's dot is drawn on top of a healthy neighbour's.
    ordered = sorted(rows, key=lambda r: -SEVERITY.index(r.status))
    return [
        Dot(r.latitude, r.longitude, r.status.css, f"{r.name} ({r.country or '?'}): {r.status}")
        for r in ordered
        if r.latitude is not None and r.longitude is not None
    ]


def current_load(state: AppState) -> Callable[[], LoadView | None]:
    """The dispatcher's live load view (None before the first load sync or without one)."""

    def load() -> LoadView | None:
        view: LoadView | None = state.extras.get("load_view")
        return view

    return load


def _load_info(state: AppState, view: LoadView | None) -> dict[str, Any]:
    """How the load figures are made and how fresh they are (page footnote, JSON)."""
    return {
        "window_seconds": state.settings.load_window_seconds,
        "sync_seconds": state.settings.load_sync_seconds,
        "estimated": view is not None,
    }


def routes(state: AppState) -> list[BaseRoute]:
    cache = StatusCache(StatusSource(state.sessions, state.clock))
    state.extras["status_cache"] = cache
    templates = make_templates()
    load = current_load(state)

    async def warm() -> None:
        cache.warm()  # the first visitor should not pay for the cold queries

    async def wire_views() -> None:
        # mirrorhub.web.app builds the per-file views before the dispatcher exists; hand
        # them the live load view now. They read it per rendered view, never per redirect.
        views = getattr(state.extras.get("dispatcher"), "views", None)
        if isinstance(views, Views):
            views.load = load

    state.extras.setdefault("startup", []).extend([warm, wire_views])
    state.extras.setdefault("shutdown", []).append(cache.close)

    memo: dict[str, Any] = {}

    def sparklines(model: StatusModel) -> dict[str, Markup]:
        """One SVG per mirror, drawn once per model rather than once per page view."""
        if memo.get("model") is not model:
            memo["model"] = model
            memo["sparklines"] = {
                r.name: sparkline(
                    r.availability, label=f"hourly availability of {r.name}", width=96
                )
                for r in model.mirrors
            }
        drawn: dict[str, Markup] = memo["sparklines"]
        return drawn

    async def model_or_503() -> StatusModel | Response:
        try:
            return await cache.get()
        except (SQLAlchemyError, OSError) as exc:
            log.warning("status page unavailable: %s", exc)
            return PlainTextResponse(
                "The mirror status is unavailable right now; try again shortly.\n",
                status_code=503,
                headers={"retry-after": "10", "cache-control": "no-store"},
            )

    async def root(request: Request) -> Response:
        return RedirectResponse("/-/status", status_code=302)

    async def status_page(request: Request) -> Response:
        model = await model_or_503()
        if isinstance(model, Response):
            return model
        f = _filters(request)
        rows = _rows(model, f)
        view = load()
        context = {
            "model": model,
            "rows": rows,
            "filters": f,
            "statuses": [s for s in SEVERITY if s is not Status.DISABLED],
            "countries": countries(model),
            "sort_keys": SORT_KEYS,
            "severity": {s: i for i, s in enumerate(SEVERITY)},
            "map_svg": world_map(_dots(rows)),
            "sparklines": [sparklines(model)[r.name] for r in rows],
            "loads": [mirror_load(view, r.name, r.capacity) for r in rows],
            "load_info": _load_info(state, view),
            "attributions": state.geo.attributions(),
            "now": model.generated_at,
        }
        return templates.TemplateResponse(
            request, "status.html", context, headers={"cache-control": "no-cache"}
        )

    async def status_json(request: Request) -> Response:
        model = await model_or_503()
        if isinstance(model, Response):
            return model
        view = load()
        body = to_json(model, _rows(model, _filters(request)), view)
        body["load"] = _load_info(state, view)
        body["attributions"] = [{"text": a.text, "url": a.url} for a in state.geo.attributions()]
        return JSONResponse(body, headers={"cache-control": JSON_CACHE_CONTROL})

    async def map_svg(request: Request) -> Response:
        model = await model_or_503()
        if isinstance(model, Response):
            return model
        svg = '<?xml version="1.0" encoding="UTF-8"?>\n' + str(
            world_map(_dots(list(model.mirrors)))
        )
        return Response(
            svg, media_type="image/svg+xml", headers={"cache-control": JSON_CACHE_CONTROL}
        )

    return [
        Route("/-/", root, methods=["GET", "HEAD"]),
        Route("/-/status", status_page, methods=["GET", "HEAD"], name="status"),
        Route("/-/api/status", status_json, methods=["GET", "HEAD"], name="api_status"),
        Route("/-/map.svg", map_svg, methods=["GET", "HEAD"], name="map_svg"),
    ]
