"""The process registry, index-change notifications and the fleet routes, in one process.

Runs on SQLite and PostgreSQL (``db_url``); LISTEN/NOTIFY cases need PostgreSQL, and one of
them cuts the listener's connection through :class:`TcpProxy` and expects a reconnect.
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from mirrorhub import fleet
from mirrorhub.db import repositories
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.index import (
    IndexConfig,
    IndexHolder,
    IndexSource,
    SourceLoader,
    empty_index,
    refresh_loop,
)
from mirrorhub.notify import IndexListener
from mirrorhub.settings import Settings
from mirrorhub.web.app import create_app
from mirrorhub.workers import leases
from tests.scaleout.procs import cli, pg_host_port, via_proxy
from tests.scaleout.tcpproxy import TcpProxy

Sessions = leases.Sessions


async def test_heartbeat_rows_live_and_gone(sessions: Sessions) -> None:
    await fleet.beat(sessions, "w1", "worker", 100.0, 100.0)
    await fleet.beat(sessions, "w1", "worker", 100.0, 105.0)  # upsert, not a second row
    await fleet.beat(sessions, "h:1/http", "dispatcher", 100.0, 101.0, index_version=7)
    live = await fleet.live_processes(sessions, 110.0, 5.0)
    assert [(p.id, p.role, p.heartbeat_at) for p in live] == [
        ("h:1/http", "dispatcher", 101.0),
        ("w1", "worker", 105.0),
    ]
    assert live[0].index_version == 7
    # Three missed heartbeats: no longer live, but the row stays until pruned.
    assert [p.id for p in await fleet.live_processes(sessions, 117.0, 5.0)] == ["w1"]
    assert await fleet.prune(sessions, 117.0, 14.0) == 1  # h:1 only
    await fleet.forget(sessions, "w1")
    assert await fleet.live_processes(sessions, 105.0, 5.0) == []


async def test_heartbeat_task_registers_and_removes_itself(sessions: Sessions) -> None:
    beat = fleet.Heartbeat(sessions, "w-task", "worker", 0.05, index_version=lambda: 3)
    beat.start()
    for _ in range(100):
        if await fleet.live_processes(sessions, beat.clock(), 1.0):
            break
        await asyncio.sleep(0.02)
    (row,) = await fleet.live_processes(sessions, beat.clock(), 1.0)
    assert (row.id, row.index_version) == ("w-task", 3)
    await beat.stop()
    assert await fleet.live_processes(sessions, beat.clock(), 1.0) == []


async def test_api_and_page_list_processes_and_leases(db_url: str, sessions: Sessions) -> None:
    now = 1_000_000.0
    await leases.sync_jobs(sessions, ["scan:1", "probe"], ["scan:", "probe"])
    (job,) = await leases.claim_due(sessions, "w1", now, 60.0, 1, ["scan:"])
    await fleet.beat(sessions, "w1", "worker", now - 50, now - 1)
    await fleet.beat(sessions, "w-dead", "worker", now - 500, now - 400)
    app = create_app(Settings(database_url=db_url), clock=lambda: now)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        r = await client.get("/-/api/workers")
        assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
        body = r.json()
        assert [p["id"] for p in body["processes"]] == ["w1"]
        jobs = {j["key"]: j for j in body["jobs"]}
        assert jobs["scan:1"]["leased"] and jobs["scan:1"]["lease_owner"] == "w1"
        assert jobs["scan:1"]["lease_until"] == now + 60
        assert not jobs["probe"]["leased"] and jobs["probe"]["lease_owner"] is None
        page = await client.get("/-/workers")
        assert page.status_code == 200
        assert "w1" in page.text and "scan:1" in page.text and "w-dead" not in page.text
    await app.inner.state.mirrorhub.engine.dispose()  # no lifespan ran to do it
    assert job.key == "scan:1"


async def test_refresh_loop_wakes_at_once(tmp_path: Path) -> None:
    """With a long interval, setting ``wake`` makes the loop check again right away."""
    versions = iter(range(100))
    checks: list[int] = []

    async def load_version() -> int:
        checks.append(1)
        return -1  # never moves: only the number of checks matters

    async def load_source() -> IndexSource:  # pragma: no cover - not reached
        raise AssertionError(next(versions))

    holder = IndexHolder(empty_index(IndexConfig()))
    wake = asyncio.Event()
    task = asyncio.create_task(
        refresh_loop(
            holder, SourceLoader(load_version, load_source), IndexConfig(), 3600.0, wake=wake
        )
    )
    await asyncio.sleep(0.05)
    assert len(checks) == 1
    wake.set()
    await asyncio.sleep(0.05)
    assert len(checks) == 2
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def _bump(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine).begin() as session:
            await repositories.bump_version(session, files=None)
    finally:
        await engine.dispose()


async def _wait(event: asyncio.Event, timeout: float = 5.0) -> float:
    loop = asyncio.get_running_loop()
    start = loop.time()
    await asyncio.wait_for(event.wait(), timeout)
    return loop.time() - start


async def test_listener_wakes_on_bump_version(db_url: str) -> None:
    listener = IndexListener(db_url)
    if db_url.startswith("sqlite"):
        assert not listener.enabled  # one process on SQLite: nothing to listen to
        listener.start()
        await listener.stop()
        await _bump(db_url)  # and bump_version sends nothing there
        return
    listener.start()
    try:
        await _wait(listener.event)  # set once connected: changes made before count too
        listener.event.clear()
        await _bump(db_url)
        took = await _wait(listener.event, 2.0)
        assert took < 1.0 and listener.notifications == 1
        # A rolled-back bump notifies nobody.
        listener.event.clear()
        engine = create_engine(db_url)
        async with session_factory(engine)() as session:
            await repositories.bump_version(session, files=None)
            await session.rollback()
        await engine.dispose()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(listener.event.wait(), 0.5)
    finally:
        await listener.stop()


async def test_listener_reconnects_after_a_cut(db_url: str) -> None:
    if db_url.startswith("sqlite"):
        return  # nothing to reconnect to
    host, port, _ = pg_host_port(db_url)
    proxy = await asyncio.to_thread(TcpProxy(host, port).start)
    listener = IndexListener(via_proxy(db_url, proxy.port))
    listener.start()
    try:
        await _wait(listener.event)
        await asyncio.to_thread(proxy.cut)
        for _ in range(100):
            if not listener.connected:
                break
            await asyncio.sleep(0.02)
        assert not listener.connected
        listener.event.clear()
        await asyncio.sleep(1.0)  # a few failed reconnects (backoff)
        await asyncio.to_thread(proxy.restore)
        took = await _wait(listener.event, 10.0)  # set on reconnect
        assert listener.connected, took
        listener.event.clear()
        await _bump(db_url)
        await _wait(listener.event, 2.0)
    finally:
        await listener.stop()
        await asyncio.to_thread(proxy.close)


def test_db_upgrade_cli_on_an_empty_database(db_url: str, tmp_path: Path) -> None:
    """``mirrorhub db upgrade`` creates the schema from nothing, and again is a no-op."""
    if db_url.startswith("sqlite"):
        db_url = f"sqlite:///{tmp_path / 'fresh.db'}"
    else:
        asyncio.run(_empty_pg(db_url))
    env = {"MIRRORHUB_DATABASE_URL": db_url, "PATH": "/usr/bin:/bin"}
    for _ in range(2):
        cli(env, "db", "upgrade")
    if db_url.startswith("sqlite"):
        with sqlite3.connect(tmp_path / "fresh.db") as conn:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    else:
        tables = asyncio.run(_pg_tables(db_url))
    assert {"processes", "jobs", "mirrors", "index_version", "alembic_version"} <= tables


async def _empty_pg(db_url: str) -> None:
    engine = create_engine(db_url)
    async with engine.begin() as conn:
        await conn.execute(text("DROP SCHEMA public CASCADE"))
        await conn.execute(text("CREATE SCHEMA public"))
    await engine.dispose()


async def _pg_tables(db_url: str) -> set[str]:
    engine = create_engine(db_url)
    async with engine.connect() as conn:
        rows = await conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname='public'"))
        names = {r[0] for r in rows}
    await engine.dispose()
    return names


def test_settings_dataclass_has_fleet_fields() -> None:
    names = {f.name for f in dataclasses.fields(Settings)}
    assert {"heartbeat_seconds", "pg_notify"} <= names
