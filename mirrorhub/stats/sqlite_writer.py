"""The statistics flush on SQLite: written from the event loop, not from a driver thread.

aiosqlite runs every statement in its own thread, which needs the GIL back after each
one. Under load the event loop releases and retakes the GIL around every poll of the
socket, so that thread is woken again and again without getting it: measured with a busy
loop, one 10,000-row flush took 15-20 s and cost that thread 2-3 s of CPU (~40 ms when
the loop is idle), and under wrk the statistics flush cost the dispatcher 2-3 µs per
redirect (docs/performance.md, "session 8"). A flush written here, in statements of
:data:`~mirrorhub.stats.flush.JSON_ROWS` rows with a return to the loop after each, costs
the loop ~1 ms per statement and no other thread anything.

The connection is the standard library's, opened on the database file itself (``mode=rw``:
never creating one) with no busy wait: a write lock held elsewhere (an in-process worker
writing a scan) makes ``BEGIN IMMEDIATE`` fail at once, and the writer tries again after
:data:`BUSY_RETRY` seconds, for as long as the flush's time limit allows, instead of
blocking the loop. In WAL mode with ``synchronous=NORMAL`` a commit does not wait for the
disk; a commit that crosses SQLite's automatic checkpoint (every ~1,000 pages written)
does, once.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterable
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

BUSY_RETRY = 0.05  # seconds between attempts to take SQLite's write lock


class SqliteStatsWriter:
    """Writes flush batches to the SQLite database file ``path`` (see the module docstring)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._con: sqlite3.Connection | None = None

    async def execute(self, statements: Iterable[tuple[str, str]]) -> None:
        """Run ``(sql, json_payload)`` statements in one transaction, yielding to the
        loop after each; on any failure nothing is committed."""
        con = self._connection()
        try:
            await self._begin(con)
            for sql, payload in statements:
                con.execute(sql, (payload,))
                await asyncio.sleep(0)
            con.execute("COMMIT")
        except BaseException:
            self._abandon()
            raise

    def close(self) -> None:
        if self._con is not None:
            self._con.close()
            self._con = None

    def _connection(self) -> sqlite3.Connection:
        if self._con is None:
            uri = f"file:{quote(self.path)}?mode=rw"
            con = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None)
            try:
                con.execute("PRAGMA synchronous=NORMAL")  # as mirrorhub.db.session's
            except BaseException:
                con.close()
                raise
            self._con = con
        return self._con

    @staticmethod
    async def _begin(con: sqlite3.Connection) -> None:
        while True:
            try:
                con.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
            await asyncio.sleep(BUSY_RETRY)

    def _abandon(self) -> None:
        """Drop the connection after a failure: closing it rolls back what the transaction
        wrote, and the next flush starts on a fresh one (a failed one may be in any state)."""
        self.close()


def sqlite_file(sessions: async_sessionmaker[AsyncSession]) -> str | None:
    """The database file of a SQLite session factory; None for PostgreSQL and for an
    in-memory database (another connection would see another database)."""
    bind = sessions.kw.get("bind")
    if bind is None or bind.url.get_backend_name() != "sqlite":
        return None
    url = bind.url
    database: str | None = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database
