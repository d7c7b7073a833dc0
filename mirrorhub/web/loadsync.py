"""Capacity-aware distribution in a running dispatcher.

A :class:`LoadRecorder` adds each redirected file's size to this dispatcher's sliding-window
estimate (on the hot path: a few additions). Every ``load_sync_seconds`` a background task
publishes the estimate in ``mirror_load``, reads the other dispatchers' fresh estimates,
and swaps a new :class:`~mirrorhub.load.LoadView` into the dispatcher. With the database
away, the dispatcher holds mirrors back on its own estimate alone.

Accuracy across a fleet: each dispatcher sees the others' traffic up to one sync interval
late plus the window's smoothing, so a mirror's share is corrected within a few seconds;
bursts shorter than that may overshoot a mirror's capacity briefly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import MirrorLoadRow
from mirrorhub.domain import Outcome
from mirrorhub.load import LoadEstimator, LoadView, make_view
from mirrorhub.web.redirect import ClientContext, Dispatcher, Recorder, Scope
from mirrorhub.web.state import AppState

log = logging.getLogger(__name__)
STALE_AFTER = 3  # sync intervals after which another dispatcher's estimate is ignored


class LoadRecorder(Recorder):
    def __init__(self, state: AppState, estimator: LoadEstimator) -> None:
        self.state = state
        self.estimator = estimator
        self.view = LoadView({}, {})  # the dispatcher's view; replaced at every sync

    def record(
        self,
        outcome: Outcome,
        mirror: str | None,
        pos: int | None,
        ctx: ClientContext | None,
        scope: Scope,
        started: float,
    ) -> None:
        if outcome is Outcome.MIRROR and mirror is not None and pos is not None:
            sizes = self.state.holder.current.sizes
            if pos < len(sizes):
                self.estimator.add(mirror, sizes[pos])
                self.view.add(mirror, sizes[pos])


def install(state: AppState) -> None:
    """Register the recorder and the sync task (called while the app is assembled)."""
    settings = state.settings
    estimator = LoadEstimator(window=settings.load_window_seconds, step=1.0)
    state.extras["load_estimator"] = estimator
    recorder = LoadRecorder(state, estimator)
    state.extras.setdefault("recorders", []).append(recorder)
    process = f"{socket.gethostname()}:{os.getpid()}"

    async def start() -> None:
        state.tasks.append(asyncio.create_task(_sync_loop(state, estimator, recorder, process)))

    async def stop() -> None:
        with contextlib.suppress(Exception):
            async with state.sessions.begin() as session:
                await session.execute(delete(MirrorLoadRow).where(MirrorLoadRow.process == process))

    state.extras.setdefault("startup", []).append(start)
    state.extras.setdefault("shutdown", []).append(stop)


async def _sync_loop(
    state: AppState, estimator: LoadEstimator, recorder: LoadRecorder, process: str
) -> None:
    interval = state.settings.load_sync_seconds
    while True:
        await asyncio.sleep(interval)
        local = estimator.mbps()
        others: Mapping[str, float] = {}
        try:
            others = await exchange(state.sessions, process, local, state.clock(), interval)
        except Exception as exc:  # the database may be away: hold back on our own estimate
            log.debug("load sync failed: %s", exc)
        capacities = {s.mirror.name: s.mirror.capacity for s in state.holder.current.slots}
        view = make_view(local, others, capacities, window=estimator.window)
        state.extras["load_view"] = view
        recorder.view = view
        dispatcher: Dispatcher | None = state.extras.get("dispatcher")
        if dispatcher is not None:
            dispatcher.load = view


async def exchange(
    sessions: async_sessionmaker[AsyncSession],
    process: str,
    local: Mapping[str, float],
    now: float,
    interval: float,
) -> dict[str, float]:
    """Publish this dispatcher's estimate; return the sum of the others' fresh ones."""
    async with sessions.begin() as session:
        await session.execute(delete(MirrorLoadRow).where(MirrorLoadRow.process == process))
        rows = [
            MirrorLoadRow(process=process, mirror=m, mbps=v, updated_at=now)
            for m, v in local.items()
            if v > 0
        ]
        session.add_all(rows)
        result = await session.execute(
            select(MirrorLoadRow.mirror, MirrorLoadRow.mbps).where(
                MirrorLoadRow.process != process,
                MirrorLoadRow.updated_at >= now - STALE_AFTER * interval,
            )
        )
        totals: dict[str, float] = {}
        for mirror, mbps in result:
            totals[mirror] = totals.get(mirror, 0.0) + mbps
        return totals
