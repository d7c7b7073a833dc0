"""Retention: daily rows older than stats_raw_days become monthly totals, exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import UTC, date, datetime

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import (
    StatsCountryDailyRow,
    StatsFileDailyRow,
    StatsMirrorDailyRow,
    StatsMonthlyRow,
)
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.settings import Settings
from mirrorhub.stats import queries
from mirrorhub.stats.retention import apply_stats_retention, cutoff_day

NOW = datetime(2025, 6, 15, 12, tzinfo=UTC).timestamp()
SETTINGS = dataclasses.replace(Settings(), stats_raw_days=10)  # keep 2025-06-06 .. 06-15


async def seed(sessions: async_sessionmaker[AsyncSession]) -> None:
    days = [date(2025, 4, 30), date(2025, 5, 1), date(2025, 5, 31), date(2025, 6, 5),
            date(2025, 6, 6), date(2025, 6, 15)]  # fmt: skip
    async with sessions() as s, s.begin():
        for n, day in enumerate(days, start=1):
            for path in ("pub/a.iso", "pub/b.iso"):
                await s.execute(
                    insert(StatsFileDailyRow).values(day=day, path=path, downloads=n, bytes=n * 10)
                )
            await s.execute(
                insert(StatsMirrorDailyRow).values(
                    day=day, mirror="m", downloads=2 * n, bytes=n * 20
                )
            )
            await s.execute(
                insert(StatsCountryDailyRow).values(
                    day=day, country="DE", downloads=2 * n, bytes=n * 20
                )
            )


async def monthly(
    sessions: async_sessionmaker[AsyncSession],
) -> dict[tuple[date, str, str], tuple[int, int]]:
    async with sessions() as s:
        rows = (await s.execute(select(StatsMonthlyRow))).scalars().all()
        return {(r.month, r.kind, r.key): (r.downloads, r.bytes) for r in rows}


async def daily_days(sessions: async_sessionmaker[AsyncSession]) -> list[date]:
    async with sessions() as s:
        return sorted(set((await s.execute(select(StatsFileDailyRow.day))).scalars()))


def test_cutoff_counts_today_as_a_kept_day() -> None:
    assert cutoff_day(NOW, 10) == date(2025, 6, 6)
    assert cutoff_day(NOW, 1) == date(2025, 6, 15)


async def test_old_days_become_monthly_totals(sessions: async_sessionmaker[AsyncSession]) -> None:
    await seed(sessions)
    async with sessions() as s:
        before = await queries.per_month(s)
    report = await apply_stats_retention(sessions, SETTINGS, clock=lambda: NOW)
    assert report.cutoff == date(2025, 6, 6)
    assert report.moved == {"file": 8, "mirror": 4, "country": 4}
    assert await daily_days(sessions) == [date(2025, 6, 6), date(2025, 6, 15)]
    m = await monthly(sessions)
    apr, may, jun = date(2025, 4, 1), date(2025, 5, 1), date(2025, 6, 1)
    assert m == {
        (apr, "file", "pub/a.iso"): (1, 10), (apr, "file", "pub/b.iso"): (1, 10),
        (may, "file", "pub/a.iso"): (5, 50), (may, "file", "pub/b.iso"): (5, 50),
        (jun, "file", "pub/a.iso"): (4, 40), (jun, "file", "pub/b.iso"): (4, 40),
        (apr, "mirror", "m"): (2, 20), (may, "mirror", "m"): (10, 100), (jun, "mirror", "m"): (8, 80),
        (apr, "country", "DE"): (2, 20), (may, "country", "DE"): (10, 100),
        (jun, "country", "DE"): (8, 80),
    }  # fmt: skip
    # Monthly totals plus the kept days tell the same story as before.
    async with sessions() as s:
        assert await queries.per_month(s) == before
    # Idempotent: a second run finds nothing to move.
    again = await apply_stats_retention(sessions, SETTINGS, clock=lambda: NOW)
    assert again.moved == {"file": 0, "mirror": 0, "country": 0}
    assert await monthly(sessions) == m
    # A later run adds the next day to the existing month row.
    tomorrow = NOW + 86_400
    await apply_stats_retention(sessions, SETTINGS, clock=lambda: tomorrow)
    assert (await monthly(sessions))[(jun, "mirror", "m")] == (18, 180)
    assert await daily_days(sessions) == [date(2025, 6, 15)]


async def test_concurrent_runs_move_each_row_once(db_url: str) -> None:
    engines = [create_engine(db_url) for _ in range(3)]
    try:
        sessions = [session_factory(e) for e in engines]
        await seed(sessions[0])
        await asyncio.gather(
            *(apply_stats_retention(s, SETTINGS, clock=lambda: NOW) for s in sessions)
        )
        m = await monthly(sessions[0])
        assert m[(date(2025, 5, 1), "mirror", "m")] == (10, 100)
        assert m[(date(2025, 6, 1), "file", "pub/a.iso")] == (4, 40)
    finally:
        for e in engines:
            await e.dispose()
