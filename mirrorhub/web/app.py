"""Wires the dispatcher: index refresher, GeoIP reloads, the hot path and the /-/ app.

Each feature under /-/ lives in its own module with a ``routes(state)`` function. There it
may also register start-up and shutdown hooks (``state.extras["startup"]`` /
``["shutdown"]``: lists of coroutine functions) and hot-path recorders
(``state.extras["recorders"]``: :class:`~mirrorhub.web.redirect.Recorder` objects). This
module only puts them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from mirrorhub.db.session import create_engine
from mirrorhub.geo import GeoLocator
from mirrorhub.index import IndexConfig, IndexHolder, empty_index, refresh_loop, refresh_once
from mirrorhub.selection import Band
from mirrorhub.settings import Settings
from mirrorhub.web import admin, api, fleet, loadsync, metrics, pages, recording, stats
from mirrorhub.web.origin import OriginServer
from mirrorhub.web.redirect import Dispatcher, Recorder
from mirrorhub.web.security import SecurityHeaders
from mirrorhub.web.state import AppState
from mirrorhub.web.templating import STATIC_DIR
from mirrorhub.web.views import Views

GEOIP_CHECK_SECONDS = 10.0
# Young-generation threshold of the garbage collector while the app runs (CPython's default
# is 700). Each young collection moves the objects of the requests in flight to an older
# generation, and enough of those trigger a full collection, which walks every cached
# client profile (200 mirrors each) and band: 0.1-0.5 s with the event loop stopped, every
# few seconds under load. At 50,000, young collections are 70 times rarer and the full ones
# stop (docs/performance.md, "Garbage collection"); cyclic garbage waits a little longer.
GC_YOUNG_THRESHOLD = 50_000
FEATURES = (pages, admin, fleet, api, stats, metrics)  # fleet before api: its catch-all
Hook = Callable[[], Awaitable[None]]

__all__ = ["AppState", "create_app", "index_config"]


def index_config(settings: Settings) -> IndexConfig:
    return IndexConfig(
        band=Band(settings.distance_band_factor, settings.distance_band_km),
        alternates=settings.link_alternates,
        min_redirect_size=settings.min_redirect_size,
        origin_only_patterns=settings.origin_only_patterns,
        allow_outdated=settings.allow_outdated,
        ranking_cache=settings.ranking_cache_size,
        band_cache=settings.band_cache_size,
    )


def create_app(
    settings: Settings,
    *,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.time,
    workers: bool = False,
) -> Dispatcher:
    """The dispatcher ASGI app; ``workers`` also runs the background jobs in-process."""
    config = index_config(settings)
    state = AppState(
        settings=settings,
        holder=IndexHolder(empty_index(config, clock)),
        geo=GeoLocator(settings.geoip_city_path, settings.geoip_asn_path),
        engine=create_engine(settings.database_url),
        clock=clock,
    )
    startup: list[Hook] = state.extras.setdefault("startup", [])
    shutdown: list[Hook] = state.extras.setdefault("shutdown", [])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await refresh_once(state.holder, state.loader, config, clock)
        state.tasks.append(
            asyncio.create_task(
                refresh_loop(
                    state.holder,
                    state.loader,
                    config,
                    settings.index_refresh_seconds,
                    clock,
                    wake=state.extras.get("index_wake"),  # set by web/fleet.py (LISTEN)
                )
            )
        )
        state.tasks.append(asyncio.create_task(_geoip_reloader(state.geo, dispatcher)))
        for hook in startup:
            await hook()
        gc_thresholds = gc.get_threshold()
        gc.set_threshold(max(GC_YOUNG_THRESHOLD, gc_thresholds[0]), *gc_thresholds[1:])
        stop_workers = asyncio.Event()
        worker_task = None
        if workers:
            from mirrorhub.workers.jobs import run_workers

            worker_task = asyncio.create_task(
                run_workers(state.sessions, settings, stop_workers, clock=clock)
            )
        try:
            yield
        finally:
            if worker_task is not None:
                # Jobs in flight get the runner's grace period, then are abandoned cleanly.
                stop_workers.set()
                await asyncio.gather(worker_task, return_exceptions=True)
            for hook in shutdown:
                with contextlib.suppress(Exception):
                    await hook()
            for task in state.tasks:
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            await state.engine.dispose()
            gc.set_threshold(*gc_thresholds)

    async def health(request: Request) -> Response:
        holder = state.holder
        return JSONResponse(
            {
                "index_version": holder.current.version,
                "files": len(holder.current),
                "mirrors": len(holder.current.slots),
                "index_age_seconds": round(clock() - holder.current.built_at, 1),
                "database_ok": holder.database_ok,
                "database_error": holder.last_error,
            },
            headers={"cache-control": "no-store"},
        )

    loadsync.install(state)
    routes: list[BaseRoute] = [Route("/-/health", health)]
    for feature in FEATURES:
        routes.extend(feature.routes(state))
    routes.append(Mount("/-/static", app=StaticFiles(directory=STATIC_DIR), name="static"))
    inner = Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(SecurityHeaders)])
    inner.state.mirrorhub = state
    recorders: list[Recorder] = state.extras.get("recorders", [])
    dispatcher = Dispatcher(
        settings,
        state.holder,
        state.geo,
        inner,
        OriginServer(settings),
        rng,
        Views(settings),
        clock,
        recorder=_fan_out(recorders),
    )
    state.extras["dispatcher"] = dispatcher
    return dispatcher


def _fan_out(recorders: list[Recorder]) -> Recorder | None:
    """One recorder for the hot path, however many features registered one: the statistics,
    load and metrics recorders fused into one call (mirrorhub.web.recording)."""
    return recording.combine(recorders)


async def _geoip_reloader(geo: GeoLocator, dispatcher: Dispatcher) -> None:
    while True:
        await asyncio.sleep(GEOIP_CHECK_SECONDS)
        if await asyncio.to_thread(geo.maybe_reload):
            dispatcher.forget_clients()  # cached contexts hold answers from the old file
