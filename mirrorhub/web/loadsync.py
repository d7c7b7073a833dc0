"""Capacity-aware distribution in a running dispatcher.

A :class:`LoadRecorder` adds each redirected file's size to this dispatcher's current view at
once and to its sliding-window estimate once per mirror and estimate step (on the hot path:
a dict addition and :meth:`~mirrorhub.load.LoadView.add`). On start-up and then
every ``load_sync_seconds`` a background task publishes the estimate in ``mirror_load``,
reads the other dispatchers' fresh estimates, and swaps a new
:class:`~mirrorhub.load.LoadView` into the dispatcher. With the database away, the
dispatcher holds mirrors back on its own estimate alone.

Accuracy across a fleet (docs/behaviour.md, "Fleet-wide capacity limit: accuracy"): a
dispatcher counts its own redirects at once but another's only as that one's last published
estimate, which is up to two sync periods (plus two exchanges) old before the next sync
replaces it. So the fleet's estimate for a mirror stays under ``HARD x capacity`` plus what
the other dispatchers sent it in that time: at most ``(N-1)/N x demand x 2 x sync / window``
for a demand split evenly over N dispatchers. Between syncs a view only grows (traffic leaving
the window is subtracted at the next sync), which errs on the side of holding back early.
Rows are stamped with each dispatcher's wall clock and ignored after ``STALE_AFTER`` sync
periods: dispatchers' clocks must agree to well within that.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
from collections import defaultdict
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
ESTIMATE_STEP = 1.0  # seconds per bucket of the sliding-window estimate


class LoadRecorder(Recorder):
    """Adds each redirect to the dispatcher's view at once and to the estimator per step.

    The view (what the next pick reads) gets every redirect on the spot. The estimator
    (read only by the sync task, through :meth:`estimate`) gets one
    :meth:`~mirrorhub.load.LoadEstimator.add` per mirror and step: this step's bytes wait in
    ``pending`` and are handed over, into the step they were redirected in, when the first
    redirect of a later step arrives or the estimate is read. Every read of the estimate
    therefore sees exactly what per-redirect calls would have given.
    """

    def __init__(self, state: AppState, estimator: LoadEstimator) -> None:
        self.state = state
        self.estimator = estimator
        self.view = LoadView({}, {})  # the dispatcher's view; replaced at every sync
        self.pending: defaultdict[str, int] = defaultdict(int)  # bytes per mirror, this step
        self.clock = estimator.clock
        self.step_start = math.inf  # the current step is [step_start, step_end)
        self.step_end = -math.inf
        self.step_at = 0.0  # the time of the current step's first redirect

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
                self.add(mirror, sizes[pos])

    def add(self, mirror: str, nbytes: int) -> None:
        now = self.clock()
        if not self.step_start <= now < self.step_end:
            self.new_step(now)
        self.pending[mirror] += nbytes
        self.view.add(mirror, nbytes)

    def new_step(self, now: float) -> None:
        """Hand the finished step to the estimator; ``now`` starts the next one."""
        self.flush()
        step = self.estimator.step
        self.step_at = now
        self.step_start = now // step * step
        self.step_end = self.step_start + step

    def flush(self) -> None:
        """Add the pending step's bytes to the estimator, in the step they belong to."""
        if not self.pending:
            return
        pending, self.pending = self.pending, defaultdict(int)
        add, at = self.estimator.add, self.step_at
        for mirror, nbytes in pending.items():
            add(mirror, nbytes, at)

    def estimate(self) -> dict[str, float]:
        """The estimator's Mbit/s per mirror, this step's redirects included."""
        self.flush()
        return self.estimator.mbps()


def install(state: AppState) -> None:
    """Register the recorder and the sync task (called while the app is assembled)."""
    settings = state.settings
    estimator = LoadEstimator(window=settings.load_window_seconds, step=ESTIMATE_STEP)
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
    while True:  # at once on start-up: a new dispatcher learns the fleet's load first thing
        local = recorder.estimate()
        others: Mapping[str, float] = {}
        try:
            others = await exchange(state.sessions, process, local, state.clock(), interval)
        except Exception as exc:  # the database may be away: hold back on our own estimate
            log.debug("load sync failed: %s", exc)
        capacities = {s.mirror.name: s.mirror.capacity for s in state.holder.current.slots}
        # Our own estimate again, not ``local``: redirects made while the exchange awaited the
        # database went into the old view, which is about to be dropped. Nothing awaits
        # between here and the swap, so the new view misses none of our own traffic.
        view = make_view(recorder.estimate(), others, capacities, window=estimator.window)
        state.extras["load_view"] = view
        recorder.view = view
        dispatcher: Dispatcher | None = state.extras.get("dispatcher")
        if dispatcher is not None:
            dispatcher.load = view
        await asyncio.sleep(interval)


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
