"""The process registry: which dispatchers and workers are alive, for ``/-/workers``.

Each process upserts its row in ``processes`` every ``heartbeat_seconds`` and deletes it on a
clean shutdown; a process that dies simply stops beating and drops off the live list after
``LIVE_FACTOR`` heartbeats. The registry is informational: job leases (``jobs`` table) decide
who runs what, so a stale row can never make a job run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import WorkerRow

Sessions = async_sessionmaker[AsyncSession]
LIVE_FACTOR = 3.0  # missed heartbeats before a process counts as gone
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    id: str
    role: str  # "worker" | "dispatcher"
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    index_version: int | None


def process_id(role: str, given: str | None = None) -> str:
    """``HOST:PID`` for workers (their lease owner name), ``HOST:PID/http`` for dispatchers.

    ``serve`` runs both roles in one process, so the two rows need distinct ids.
    """
    if given:
        return given
    base = f"{socket.gethostname()}:{os.getpid()}"
    return base if role == "worker" else f"{base}/http"


async def beat(
    sessions: Sessions,
    pid_: str,
    role: str,
    started_at: float,
    now: float,
    index_version: int | None = None,
) -> None:
    """Upsert this process's row (UPDATE, then INSERT if absent: portable and race-free
    because only this process writes its own id)."""
    values = {"heartbeat_at": now, "index_version": index_version, "role": role}
    async with sessions.begin() as session:
        result = await session.execute(
            update(WorkerRow).where(WorkerRow.id == pid_).values(**values)
        )
        if result.rowcount == 0:  # type: ignore[attr-defined]
            await session.execute(
                insert(WorkerRow).values(
                    id=pid_,
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=started_at,
                    **values,
                )
            )


async def forget(sessions: Sessions, pid_: str) -> None:
    async with sessions.begin() as session:
        await session.execute(delete(WorkerRow).where(WorkerRow.id == pid_))


async def live_processes(
    sessions: Sessions, now: float, heartbeat_seconds: float
) -> list[ProcessInfo]:
    """Processes whose last heartbeat is newer than ``LIVE_FACTOR`` heartbeats."""
    since = now - LIVE_FACTOR * heartbeat_seconds
    async with sessions() as session:
        rows = (
            await session.execute(
                select(WorkerRow)
                .where(WorkerRow.heartbeat_at >= since)
                .order_by(WorkerRow.role, WorkerRow.id)
            )
        ).scalars()
        return [
            ProcessInfo(r.id, r.role, r.host, r.pid, r.started_at, r.heartbeat_at, r.index_version)
            for r in rows
        ]


async def prune(sessions: Sessions, now: float, older_than: float) -> int:
    """Drop rows of processes silent for ``older_than`` seconds (killed, not stopped)."""
    async with sessions.begin() as session:
        result = await session.execute(
            delete(WorkerRow).where(WorkerRow.heartbeat_at < now - older_than)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class Heartbeat:
    """A background task that keeps one process's row fresh; survives database outages."""

    def __init__(
        self,
        sessions: Sessions,
        pid_: str,
        role: str,
        interval: float,
        *,
        index_version: Callable[[], int | None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sessions = sessions
        self.id = pid_
        self.role = role
        self.interval = interval
        self.index_version = index_version
        self.clock = clock
        self.started_at = clock()
        self._task: asyncio.Task[None] | None = None

    async def _loop(self) -> None:
        while True:
            try:
                await beat(
                    self.sessions,
                    self.id,
                    self.role,
                    self.started_at,
                    self.clock(),
                    self.index_version(),
                )
                # A day of silence means a process that was killed; keep the table small.
                await prune(self.sessions, self.clock(), 86400.0)
            except Exception as exc:  # the database may be away: the next beat retries
                log.warning("heartbeat of %s failed: %s", self.id, exc)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"heartbeat {self.id}")

    async def stop(self) -> None:
        """Stop beating and remove the row, so the process leaves the list at once."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await asyncio.wait_for(forget(self.sessions, self.id), 5.0)
        except Exception as exc:  # the row ages out of the live list by itself
            log.warning("could not remove %s from the process list: %s", self.id, exc)
