"""The statistics flush on a SQLite file: written from the event loop, never blocking it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.stats import sqlite_writer
from mirrorhub.stats.flush import JSON_ROWS, StatsFlusher, date_to_day
from mirrorhub.stats.sqlite_writer import sqlite_file
from tests.conftest import _migrate
from tests.stats.test_flush import FakeCounter, stored

DAY = date_to_day(date(2025, 6, 15))
D = date(2025, 6, 15)


@pytest.fixture
def db_file(tmp_path: Path) -> Path:
    path = tmp_path / "mirrorhub.db"
    asyncio.run(_migrate(f"sqlite:///{path}"))
    return path


@pytest.fixture
async def sessions(db_file: Path) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(f"sqlite:///{db_file}")
    yield session_factory(engine)
    await engine.dispose()


async def test_a_flush_yields_to_the_loop_after_every_statement(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    counter = FakeCounter()
    flusher = StatsFlusher(counter, sessions)  # type: ignore[arg-type]
    files = 5 * JSON_ROWS
    for i in range(files):
        counter.add(DAY, f"pub/{i}.iso", "de1", "DE", 1, 10)
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    try:
        assert await flusher.flush(), flusher.last_error
    finally:
        done = True
        await task
    assert ticks >= files // JSON_ROWS  # one turn of the loop per statement at least
    got = await stored(sessions)
    assert len(got["files"]) == files and got["mirrors"] == {(D, "de1"): (files, files * 10)}


async def test_the_wal_is_checkpointed_on_a_thread_after_the_commit_not_by_it(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit on the loop must not copy the WAL into the database file (SQLite's automatic
    checkpoint waits for the disk); a thread does it afterwards, and closes the connection."""
    calls: list[tuple[bool, int, bool]] = []
    done = threading.Event()
    real = sqlite_writer.checkpoint_and_close

    def spy(con: sqlite3.Connection) -> None:
        (autocheckpoint,) = con.execute("PRAGMA wal_autocheckpoint").fetchone()
        real(con)
        try:
            con.execute("SELECT 1")
            closed = False
        except sqlite3.ProgrammingError:
            closed = True
        calls.append(
            (threading.current_thread() is threading.main_thread(), autocheckpoint, closed)
        )
        done.set()

    monkeypatch.setattr(sqlite_writer, "checkpoint_and_close", spy)
    counter = FakeCounter()
    flusher = StatsFlusher(counter, sessions)  # type: ignore[arg-type]
    for i in range(3 * JSON_ROWS):
        counter.add(DAY, f"pub/{i}.iso", "de1", "DE", 1, 10)
    assert await flusher.flush(), flusher.last_error
    assert await asyncio.to_thread(done.wait, 10)
    assert calls == [(False, 0, True)]  # off the loop's thread, no checkpoint of its own, closed
    assert len((await stored(sessions))["files"]) == 3 * JSON_ROWS


async def test_a_write_lock_held_elsewhere_is_waited_for_without_blocking(
    sessions: async_sessionmaker[AsyncSession], db_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_writer, "BUSY_RETRY", 0.01)
    other = sqlite3.connect(db_file, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # e.g. an in-process worker writing a scan
    counter = FakeCounter()
    flusher = StatsFlusher(counter, sessions)  # type: ignore[arg-type]
    counter.add(DAY, "pub/x.iso", "de1", "DE", 2, 100)
    flush = asyncio.create_task(flusher.flush())
    started = asyncio.get_running_loop().time()
    await asyncio.sleep(0.2)  # the loop runs on while the flush waits
    assert asyncio.get_running_loop().time() - started < 1.0 and not flush.done()
    other.execute("COMMIT")
    other.close()
    assert await flush, flusher.last_error
    assert (await stored(sessions))["files"] == {(D, "pub/x.iso"): (2, 200)}


async def test_a_failed_statement_commits_nothing_and_keeps_the_counts(
    sessions: async_sessionmaker[AsyncSession], db_file: Path
) -> None:
    with sqlite3.connect(db_file) as con:  # countries are written last
        con.execute("ALTER TABLE stats_country_daily RENAME TO gone")
    counter = FakeCounter()
    flusher = StatsFlusher(counter, sessions)  # type: ignore[arg-type]
    counter.add(DAY, "pub/x.iso", "de1", "DE", 2, 100)
    assert not await flusher.flush()
    assert "stats_country_daily" in (flusher.last_error or "")
    with sqlite3.connect(db_file) as con:
        assert con.execute("SELECT count(*) FROM stats_file_daily").fetchone() == (0,)
        con.execute("ALTER TABLE gone RENAME TO stats_country_daily")
    assert await flusher.flush(), flusher.last_error  # on a fresh connection
    got = await stored(sessions)
    assert got["files"] == {(D, "pub/x.iso"): (2, 200)}
    assert got["countries"] == {(D, "DE"): (2, 200)}


async def test_a_missing_database_file_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    engine = create_engine(f"sqlite:///{missing}")
    try:
        counter = FakeCounter()
        flusher = StatsFlusher(counter, session_factory(engine))  # type: ignore[arg-type]
        counter.add(DAY, "pub/x.iso", "de1", "DE", 1, 1)
        assert not await flusher.flush() and flusher.pending_downloads == 1
        assert not missing.exists()
    finally:
        await engine.dispose()


def test_only_sqlite_files_take_the_loop_writer(tmp_path: Path) -> None:
    def file_of(url: str) -> str | None:
        engine = create_engine(url)
        try:
            return sqlite_file(session_factory(engine))
        finally:
            asyncio.run(engine.dispose())

    assert file_of(f"sqlite:///{tmp_path}/a.db") == f"{tmp_path}/a.db"
    assert file_of("sqlite:///:memory:") is None
    assert file_of("postgresql://u@127.0.0.1:1/test") is None
