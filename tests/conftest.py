"""Shared fixtures.

Databases: tests that take ``db_url`` run once on SQLite and once on PostgreSQL. The
PostgreSQL server comes from ``MH_TEST_PG_URL`` (default: the server on 127.0.0.1:5432 with
trust authentication); each test run creates its own database and drops it afterwards. Where
no server answers, the PostgreSQL cases are skipped with a clear message, unless
``MH_TEST_STRICT=1`` (set by .ci/run), which turns every skip into a failure.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mirrorhub.db.migrate import upgrade_engine
from mirrorhub.db.models import Base
from mirrorhub.db.session import create_engine, session_factory

PG_SERVER_URL = os.environ.get("MH_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
STRICT = os.environ.get("MH_TEST_STRICT") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip when a needed part is missing, or fail in strict (CI) mode."""
    if condition:
        return
    if STRICT:
        pytest.fail(f"MH_TEST_STRICT=1 forbids skipping: {reason}")
    pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if STRICT and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"MH_TEST_STRICT=1 forbids skipping: {report.longrepr}"


async def _pg_admin(sql: str) -> None:
    import asyncpg

    dsn = PG_SERVER_URL.replace("postgresql+asyncpg://", "postgresql://")
    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@pytest.fixture(scope="session")
def pg_database_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run, dropped at the end."""
    name = f"mirrorhub_test_{uuid.uuid4().hex[:10]}"
    try:
        asyncio.run(_pg_admin(f'CREATE DATABASE "{name}"'))
    except (TimeoutError, OSError) as exc:
        require(False, f"no PostgreSQL server at {PG_SERVER_URL}: {exc}")
    base = PG_SERVER_URL.rsplit("/", 1)[0]
    yield f"{base}/{name}"
    asyncio.run(_pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty, migrated database; the same test runs on SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mirrorhub.db'}"
        asyncio.run(_migrate(url))
        yield url
        return
    url = request.getfixturevalue("pg_database_url")
    asyncio.run(_reset_pg(url))
    yield url


async def _migrate(url: str) -> None:
    engine = create_engine(url)
    try:
        await upgrade_engine(engine)
    finally:
        await engine.dispose()


async def _reset_pg(url: str) -> None:
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            await conn.execute(text("DROP SCHEMA public CASCADE"))
            await conn.execute(text("CREATE SCHEMA public"))
        await upgrade_engine(engine)
    finally:
        await engine.dispose()


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    eng = create_engine(db_url)
    yield eng
    await eng.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


__all__ = ["Base", "require"]
