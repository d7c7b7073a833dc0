"""Index-change notifications on PostgreSQL: ``LISTEN mirrorhub_index``.

``bump_version`` sends ``NOTIFY mirrorhub_index`` in the writer's transaction (PostgreSQL
delivers it at commit). Each dispatcher keeps one dedicated asyncpg connection that listens
and sets an :class:`asyncio.Event`, which wakes the index refresh loop at once instead of at
its next periodic check. The periodic check stays: a notification lost while the listener
reconnects only costs one refresh interval. LISTEN needs a session connection, so this one
must not go through a transaction-mode pooler (see docs/deployment.md). On SQLite there is
no other process to tell: :class:`IndexListener` does nothing there.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mirrorhub.settings import async_url

CHANNEL = "mirrorhub_index"
PING_SECONDS = 10.0  # a silently dead connection (no RST) is noticed within this
CONNECT_TIMEOUT = 5.0
BACKOFF_MIN, BACKOFF_MAX = 0.5, 30.0
log = logging.getLogger(__name__)


def is_postgresql(database_url: str) -> bool:
    return async_url(database_url).startswith("postgresql")


def asyncpg_dsn(database_url: str) -> str:
    """The plain ``postgresql://`` DSN asyncpg takes (no SQLAlchemy driver suffix)."""
    return "postgresql://" + async_url(database_url).partition("://")[2]


class IndexListener:
    """Sets ``event`` whenever the index version may have moved.

    Also sets it after every (re)connect: changes made while it was not listening would
    otherwise wait for the periodic check.
    """

    def __init__(self, database_url: str, *, enabled: bool = True) -> None:
        self.database_url = database_url
        self.enabled = enabled and is_postgresql(database_url)
        self.event = asyncio.Event()
        self.connected = False
        self.notifications = 0
        self.reconnects = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="index listener")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _on_notify(self, *_args: Any) -> None:
        self.notifications += 1
        self.event.set()

    async def _run(self) -> None:
        delay = BACKOFF_MIN
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: reconnect with backoff
                if self.connected:  # it worked until now: retry soon
                    log.warning("index listener lost its connection: %s", exc)
                    delay = BACKOFF_MIN
                self.connected = False
                self.reconnects += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)

    async def _listen_once(self) -> None:
        """Listen on one connection until it dies; always raises."""
        import asyncpg  # type: ignore[import-untyped]  # loaded on PostgreSQL installs only

        conn = await asyncpg.connect(asyncpg_dsn(self.database_url), timeout=CONNECT_TIMEOUT)
        try:
            lost = asyncio.Event()
            conn.add_termination_listener(lambda _conn: lost.set())
            await conn.add_listener(CHANNEL, self._on_notify)
            if self.reconnects:
                log.info("index listener connected again")
            self.connected = True
            self.event.set()
            while not lost.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(lost.wait(), PING_SECONDS)
                if not lost.is_set():
                    await conn.execute("SELECT 1", timeout=CONNECT_TIMEOUT)
            raise ConnectionError("listener connection closed")
        finally:
            conn.terminate()  # never waits on a dead socket
