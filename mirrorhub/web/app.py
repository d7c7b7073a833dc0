"""Wires the dispatcher: index refresher, GeoIP reloads, the hot path and the /-/ app."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mirrorhub.db import repositories
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.geo import GeoLocator
from mirrorhub.index import (
    IndexConfig,
    IndexHolder,
    IndexSource,
    empty_index,
    refresh_loop,
    refresh_once,
)
from mirrorhub.selection import Band
from mirrorhub.settings import Settings
from mirrorhub.web.origin import OriginServer
from mirrorhub.web.redirect import Dispatcher
from mirrorhub.web.views import Views

GEOIP_CHECK_SECONDS = 10.0


def index_config(settings: Settings) -> IndexConfig:
    return IndexConfig(
        band=Band(settings.distance_band_factor, settings.distance_band_km),
        alternates=settings.link_alternates,
        min_redirect_size=settings.min_redirect_size,
        origin_only_patterns=settings.origin_only_patterns,
        allow_outdated=settings.allow_outdated,
    )


@dataclass
class AppState:
    """Live objects shared by the dispatcher and the /-/ pages."""

    settings: Settings
    holder: IndexHolder
    geo: GeoLocator
    engine: AsyncEngine
    clock: Callable[[], float] = time.time
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def load_version(self) -> int:
        async with session_factory(self.engine)() as session:
            return await repositories.current_version(session)

    async def load_source(self) -> IndexSource:
        async with session_factory(self.engine)() as session:
            return await repositories.load_index_source(session)


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

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await refresh_once(state.holder, state.load_version, state.load_source, config, clock)
        state.tasks.append(
            asyncio.create_task(
                refresh_loop(
                    state.holder,
                    state.load_version,
                    state.load_source,
                    config,
                    settings.index_refresh_seconds,
                    clock,
                )
            )
        )
        state.tasks.append(asyncio.create_task(_geoip_reloader(state.geo, dispatcher)))
        stop_workers = asyncio.Event()
        worker_task = None
        if workers:
            from mirrorhub.workers.jobs import run_workers

            worker_task = asyncio.create_task(
                run_workers(session_factory(state.engine), settings, stop_workers, clock=clock)
            )
        try:
            yield
        finally:
            if worker_task is not None:
                # Jobs in flight get the runner's grace period, then are abandoned cleanly.
                stop_workers.set()
                await asyncio.gather(worker_task, return_exceptions=True)
            for task in state.tasks:
                task.cancel()
            await asyncio.gather(*state.tasks, return_exceptions=True)
            await state.engine.dispose()

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

    inner = Starlette(routes=[Route("/-/health", health)], lifespan=lifespan)
    inner.state.mirrorhub = state
    dispatcher = Dispatcher(
        settings, state.holder, state.geo, inner, OriginServer(settings), rng, Views(), clock
    )
    return dispatcher


async def _geoip_reloader(geo: GeoLocator, dispatcher: Dispatcher) -> None:
    while True:
        await asyncio.sleep(GEOIP_CHECK_SECONDS)
        if await asyncio.to_thread(geo.maybe_reload):
            dispatcher.forget_clients()  # cached contexts hold answers from the old file
