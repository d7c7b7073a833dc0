"""Flushing counts to the database: atomic adds from concurrent dispatchers, outages, bounds."""

from __future__ import annotations

import asyncio
import json
import socket
from datetime import date
from urllib.parse import urlsplit, urlunsplit

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import StatsCountryDailyRow, StatsFileDailyRow, StatsMirrorDailyRow
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.stats import flush as flush_module
from mirrorhub.stats.counter import DayCounts
from mirrorhub.stats.flush import StatsFlusher, date_to_day, merge, rows_by_kind
from tests.conftest import _reset_pg
from tests.stats.proxy import TcpProxy

DAY = date_to_day(date(2025, 6, 15))


class FakeCounter:
    """Hands out prepared days, as StatsCounter.take() would."""

    def __init__(self) -> None:
        self.queue: list[DayCounts] = []

    def add(self, day: int, path: str, mirror: str, country: str, n: int, size: int) -> None:
        self.queue.append(
            DayCounts(day, {path: [n, n * size]}, {mirror: [n, n * size]}, {country: [n, n * size]})
        )

    def take(self) -> list[DayCounts]:
        out, self.queue = self.queue, []
        return out

    def expire(self, now: float | None = None) -> int:
        return 0


def flusher(
    counter: FakeCounter, sessions: async_sessionmaker[AsyncSession], **kw: object
) -> StatsFlusher:
    return StatsFlusher(counter, sessions, **kw)  # type: ignore[arg-type]


async def stored(
    sessions: async_sessionmaker[AsyncSession],
) -> dict[str, dict[tuple[date, str], tuple[int, int]]]:
    out: dict[str, dict[tuple[date, str], tuple[int, int]]] = {}
    async with sessions() as s:
        for name, model, col in (
            ("files", StatsFileDailyRow, StatsFileDailyRow.path),
            ("mirrors", StatsMirrorDailyRow, StatsMirrorDailyRow.mirror),
            ("countries", StatsCountryDailyRow, StatsCountryDailyRow.country),
        ):
            rows = (await s.execute(select(model.day, col, model.downloads, model.bytes))).all()
            out[name] = {(d, k): (n, b) for d, k, n, b in rows}
    return out


async def test_flushes_add_to_the_stored_totals(sessions: async_sessionmaker[AsyncSession]) -> None:
    counter = FakeCounter()
    f = flusher(counter, sessions)
    counter.add(DAY, "pub/x.iso", "de1", "DE", 2, 100)
    counter.add(DAY + 1, "pub/x.iso", "", "", 1, 100)
    assert await f.flush()
    counter.add(DAY, "pub/x.iso", "de1", "FR", 3, 100)
    assert await f.flush()
    assert await f.flush()  # nothing pending: a no-op
    got = await stored(sessions)
    d0, d1 = date(2025, 6, 15), date(2025, 6, 16)
    assert got["files"] == {(d0, "pub/x.iso"): (5, 500), (d1, "pub/x.iso"): (1, 100)}
    assert got["mirrors"] == {(d0, "de1"): (5, 500), (d1, ""): (1, 100)}
    assert got["countries"] == {(d0, "DE"): (2, 200), (d0, "FR"): (3, 300), (d1, ""): (1, 100)}
    assert f.flushed == 6 and f.pending == {} and f.last_success is not None


async def test_any_path_and_large_counts_are_stored_exactly(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys and numbers go through JSON on SQLite, a few rows per statement: nothing may
    be lost or reinterpreted."""
    monkeypatch.setattr(flush_module, "JSON_ROWS", 2)  # 5 file rows: three statements
    counter = FakeCounter()
    f = flusher(counter, sessions)
    odd = [
        "pub/a b+ü@.iso",
        'pub/"quoted"\\back\\slash.iso',
        "pub/日本/€.iso",
        "pub/0123",
        "pub/1e5",
    ]
    for path in odd:
        counter.add(DAY, path, "de1", "DE", 3, 2**40)
    assert await f.flush()
    counter.add(DAY, odd[0], "de1", "DE", 1, 2**61)  # bytes near the 64-bit limit add exactly
    assert await f.flush()
    got = await stored(sessions)
    d0 = date(2025, 6, 15)
    expected = {(d0, p): (3, 3 * 2**40) for p in odd}
    expected[(d0, odd[0])] = (4, 3 * 2**40 + 2**61)
    assert got["files"] == expected
    assert got["mirrors"] == {(d0, "de1"): (16, 15 * 2**40 + 2**61)}


async def test_concurrent_flushers_lose_no_increment(db_url: str) -> None:
    """Several dispatchers (own engines, own connections) upsert the same rows at once."""
    engines = [create_engine(db_url) for _ in range(3)]
    try:
        rounds, paths = 15, [f"pub/{i}.iso" for i in range(40)]
        flushers = []
        for e in engines:
            counter = FakeCounter()
            flushers.append((counter, flusher(counter, session_factory(e))))

        async def dispatcher(counter: FakeCounter, f: StatsFlusher, seed: int) -> None:
            for r in range(rounds):
                for i in range(len(paths)):
                    # Rotate the order so concurrent transactions touch rows differently.
                    counter.add(DAY, paths[(i + seed + r) % len(paths)], "m", "DE", 1, 10)
                assert await f.flush(), f.last_error

        await asyncio.gather(*(dispatcher(c, f, n * 7) for n, (c, f) in enumerate(flushers)))
        got = await stored(session_factory(engines[0]))
        expected = rounds * len(engines)
        assert got["files"] == {(date(2025, 6, 15), p): (expected, expected * 10) for p in paths}
        total = expected * len(paths)
        assert got["mirrors"] == {(date(2025, 6, 15), "m"): (total, total * 10)}
    finally:
        for e in engines:
            await e.dispose()


def _closed_port_url(db_url: str, tmp: str) -> str:
    if db_url.startswith("sqlite"):
        # A database without the tables: every write fails. (A file that cannot be opened
        # would leave aiosqlite's failed-connect thread behind to trouble later tests.)
        return f"sqlite:///{tmp}/no-tables.db"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens once closed
    parts = urlsplit(db_url)
    return urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{port}"))


async def test_counts_wait_through_an_outage_and_are_flushed_later(
    db_url: str, sessions: async_sessionmaker[AsyncSession], tmp_path: object
) -> None:
    broken = create_engine(_closed_port_url(db_url, str(tmp_path)))
    try:
        counter = FakeCounter()
        f = flusher(counter, session_factory(broken))
        counter.add(DAY, "pub/x.iso", "de1", "DE", 2, 100)
        assert not await f.flush()
        counter.add(DAY, "pub/x.iso", "de1", "DE", 1, 100)
        counter.add(DAY, "pub/y.iso", "", "", 1, 50)
        assert not await f.flush()
        assert f.failures == 2 and f.last_error and f.pending_downloads == 4
        f.sessions = sessions  # the database is back
        assert await f.flush()
        got = await stored(sessions)
        assert got["mirrors"] == {
            (date(2025, 6, 15), "de1"): (3, 300),
            (date(2025, 6, 15), ""): (1, 50),
        }
        assert f.failures == 0 and f.last_error is None and f.dropped == 0
    finally:
        await broken.dispose()


async def test_postgres_cut_off_by_a_proxy_and_back(pg_database_url: str) -> None:
    """The issue-6 outage: PostgreSQL unreachable through a proxy we stop, then back."""
    db_url = pg_database_url
    await _reset_pg(db_url)
    parts = urlsplit(db_url)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    url = urlunsplit(parts._replace(netloc=f"{parts.username}@127.0.0.1:{proxy.port}"))
    engine = create_engine(url, connect_args={"timeout": 2})
    try:
        counter = FakeCounter()
        f = flusher(counter, session_factory(engine))
        counter.add(DAY, "pub/x.iso", "de1", "DE", 1, 100)
        assert await f.flush()
        await proxy.stop()
        for _ in range(3):  # counted during the outage
            counter.add(DAY, "pub/x.iso", "de1", "DE", 1, 100)
            assert not await f.flush(time_limit=5)
        await proxy.start()  # same port
        assert await f.flush(), f.last_error
        got = await stored(session_factory(engine))
        assert got["files"] == {(date(2025, 6, 15), "pub/x.iso"): (4, 400)}
    finally:
        await engine.dispose()
        await proxy.stop()


async def test_the_buffer_is_bounded_and_drops_are_counted(
    sessions: async_sessionmaker[AsyncSession], tmp_path: object, db_url: str
) -> None:
    broken = create_engine(_closed_port_url(db_url, str(tmp_path)))
    try:
        counter = FakeCounter()
        f = flusher(counter, session_factory(broken), buffer_rows=6)
        counter.add(DAY, "a", "m1", "DE", 1, 1)  # 3 rows
        counter.add(DAY, "b", "m2", "FR", 1, 1)  # 3 more: full
        assert not await f.flush()
        counter.add(DAY, "a", "m1", "DE", 5, 1)  # existing rows still add up
        counter.add(DAY, "c", "m3", "US", 2, 1)  # new rows: dropped
        assert not await f.flush()
        assert f.pending_rows == 6 and f.dropped == 2 and f.pending_downloads == 7
        f.sessions = sessions
        assert await f.flush()
        got = await stored(sessions)
        assert {k[1]: v[0] for k, v in got["mirrors"].items()} == {"m1": 6, "m2": 1}
    finally:
        await broken.dispose()


def test_merge_keeps_rows_already_pending_and_counts_dropped_downloads() -> None:
    batch = {("mirror", 1): {"m": [4, 40]}}
    days = [DayCounts(1, {"a": [1, 10]}, {"m": [1, 10], "n": [2, 20]}, {"DE": [3, 30]})]
    # Room for one more row: the file row; "m" adds to its pending row; "n" and DE are dropped.
    assert merge(batch, days, 2) == 2  # downloads are counted on mirror rows
    assert batch == {("mirror", 1): {"m": [5, 50]}, ("file", 1): {"a": [1, 10]}}


def test_merge_adopts_a_new_days_dicts_and_rows_come_sorted() -> None:
    files = {"b": [1, 10], "a": [2, 20]}
    batch: dict[tuple[str, int], dict[str, list[int]]] = {}
    assert merge(batch, [DayCounts(2, files, {"": [3, 30]}, {})], 100) == 0
    assert batch[("file", 2)] is files  # no copy on the usual path
    merge(batch, [DayCounts(1, {"c": [1, 1]}, {"m": [1, 1]}, {"": [1, 1]})], 100)
    rows = rows_by_kind(batch)
    assert rows["file"] == [(1, "c", 1, 1), (2, "a", 2, 20), (2, "b", 1, 10)]
    assert rows["mirror"] == [(1, "m", 1, 1), (2, "", 3, 30)]
    assert rows["country"] == [(1, "", 1, 1)]


def test_sqlite_statements_carry_the_rows_a_few_per_statement(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """By kind and day as rows_by_kind, keys in the tally's order (SQLite's write lock is
    the whole database's: no lock order to keep), a statement per JSON_ROWS rows."""
    monkeypatch.setattr(flush_module, "JSON_ROWS", 2)
    batch: dict[tuple[str, int], dict[str, list[int]]] = {}
    merge(batch, [DayCounts(2, {"b": [1, 10], "a": [2, 20], "c": [1, 1]}, {"m": [4, 31]}, {})], 99)
    merge(
        batch, [DayCounts(1, {"z": [1, 5], "x" * 2000: [1, 1]}, {"": [2, 6]}, {"DE": [2, 6]})], 99
    )
    statements = list(flush_module.sqlite_statements(batch))
    # File rows by day; two per statement and a new statement for each day.
    assert [len(json.loads(payload)) for _, payload in statements] == [1, 2, 1, 1, 1, 1]
    assert [tuple(row) for _, p in statements for row in json.loads(p)] == [
        ("1970-01-02", "z", 1, 5),  # "x" * 2000 left out
        ("1970-01-03", "b", 1, 10),
        ("1970-01-03", "a", 2, 20),
        ("1970-01-03", "c", 1, 1),
        ("1970-01-02", "", 2, 6),
        ("1970-01-03", "m", 4, 31),
        ("1970-01-02", "DE", 2, 6),
    ]
    assert [sql for sql, _ in statements] == [
        flush_module.upsert_json_sql(kind) for kind in ["file"] * 3 + ["mirror"] * 2 + ["country"]
    ]
    assert "key too long" in caplog.text  # and left out, as rows_by_kind leaves it out
