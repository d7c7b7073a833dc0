"""The statistics flush on SQLite: written from the event loop, not from a driver thread.

aiosqlite runs every statement in its own thread, which needs the GIL back after each
one. Under load the event loop releases and retakes the GIL around every poll of the
socket, so that thread is woken again and again without getting it: measured with a busy
loop, one 10,000-row flush took 15-20 s and cost that thread 2-3 s of CPU (~40 ms when
the loop is idle); in the wrk benchmark server the flush's mean wall time was 134 ms
(docs/performance.md, "session 8"). A flush written here, in statements of
:data:`~mirrorhub.stats.flush.JSON_ROWS` rows with a return to the loop after each, costs
the loop ~1.5 ms per 200-row statement, and another thread only the checkpoint below (34 ms
mean under wrk; the write lock is held that much shorter, throughput did not change
measurably).

The connection is the standard library's, opened on the database file itself (``mode=rw``:
never creating one) with no busy wait: a write lock held elsewhere (an in-process worker
writing a scan) makes ``BEGIN IMMEDIATE`` fail at once, and the writer tries again after
:data:`BUSY_RETRY` seconds, for as long as the flush's time limit allows, instead of
blocking the loop. In WAL mode with ``synchronous=NORMAL`` a commit does not wait for the
disk. A commit that crosses SQLite's automatic checkpoint (every ~1,000 pages written)
would copy the WAL into the database file and wait for the disk, on the loop: ~25 ms once
every flush or two here for 10,000 rows, more on a slow disk. So this connection never
checkpoints on its own (``wal_autocheckpoint=0``); after the commit a thread of the loop's
default executor runs a passive checkpoint (it waits for no reader or writer) and closes
the connection. SQLite releases the GIL while it works, and nothing but the loop's
shutdown waits for that thread.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

log = logging.getLogger(__name__)

BUSY_RETRY = 0.05  # seconds between attempts to take SQLite's write lock


async def write_statements(path: str, statements: Iterable[tuple[str, str]]) -> None:
    """Run ``(sql, json_payload)`` statements on the SQLite file ``path`` in one
    transaction, returning to the loop after each; on any failure nothing is committed.

    A connection per flush (opening one costs ~0.1 ms every stats_flush_seconds): nothing stays
    open between flushes, and a failed one is never reused. Closing it rolls back what an
    unfinished transaction wrote; after a commit, :func:`checkpoint_and_close` closes it.
    """
    uri = f"file:{quote(path)}?mode=rw"
    con = sqlite3.connect(uri, uri=True, timeout=0, isolation_level=None, check_same_thread=False)
    committed = False
    try:
        await _begin(con)
        await asyncio.sleep(0)  # opening the file and reading its schema: ~1 ms
        for sql, payload in statements:
            con.execute(sql, (payload,))
            await asyncio.sleep(0)
        con.execute("COMMIT")
        committed = True
    finally:
        if not committed:
            con.close()
    # Not awaited: the counts are stored; a cancelled flush must not count them again, nor
    # may a failure to start the thread (the executor shut down) fail the flush.
    try:
        asyncio.get_running_loop().run_in_executor(None, checkpoint_and_close, con)
    except RuntimeError:
        con.close()


def checkpoint_and_close(con: sqlite3.Connection) -> None:
    """Copy what the WAL holds into the database file, as far as readers and writers allow
    (PASSIVE), then close; on an executor thread."""
    try:
        con.execute("PRAGMA wal_checkpoint(PASSIVE)")
    except sqlite3.Error as exc:  # housekeeping: the next checkpoint catches up
        log.warning("statistics: WAL checkpoint failed: %s", exc)
    finally:
        con.close()


async def _begin(con: sqlite3.Connection) -> None:
    """Set the connection up and ``BEGIN IMMEDIATE``, retried every BUSY_RETRY seconds while
    another connection holds the write lock, or a lock that a checkpoint elsewhere holds
    for a moment keeps this one from reading the schema (the caller's time limit bounds
    the wait)."""
    while True:
        try:
            con.execute("PRAGMA synchronous=NORMAL")  # as mirrorhub.db.session's connections
            con.execute("PRAGMA wal_autocheckpoint=0")  # see the module docstring
            con.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
        await asyncio.sleep(BUSY_RETRY)


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
