"""Read the download statistics: top files, per mirror, per country, per day and per month.

Session in, plain data out; the caller owns the session. Periods are inclusive ranges of
UTC days over the daily rows (kept ``stats_raw_days``); :func:`per_month` adds the monthly
totals that retention left for older days. Every download has exactly one mirror row (""
= the origin), so totals and the time series come from ``stats_mirror_daily``.

The pages (mirrorhub.web.stats) and the API use :func:`summary` or the single queries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from mirrorhub.db.models import (
    StatsCountryDailyRow,
    StatsFileDailyRow,
    StatsMirrorDailyRow,
    StatsMonthlyRow,
)

MAX_DAYS = 366
MAX_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class Period:
    """An inclusive range of UTC days."""

    first: date
    last: date

    @classmethod
    def last_days(cls, days: int, now: float) -> Period:
        today = datetime.fromtimestamp(now, UTC).date()
        return cls(today - timedelta(days=days - 1), today)

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1


@dataclass(frozen=True, slots=True)
class Total:
    key: str  # path, mirror name ("" = origin) or country code ("" = unknown)
    downloads: int
    bytes: int


@dataclass(frozen=True, slots=True)
class DayTotal:
    day: date  # a day, or the first day of a month
    downloads: int
    bytes: int


@dataclass(frozen=True, slots=True)
class Summary:
    period: Period
    downloads: int
    bytes: int
    files: list[Total]
    mirrors: list[Total]
    countries: list[Total]
    days: list[DayTotal]

    def to_json(self) -> dict[str, Any]:
        return {
            "from": self.period.first.isoformat(),
            "to": self.period.last.isoformat(),
            "days": self.period.days,
            "downloads": self.downloads,
            "bytes": self.bytes,
            "files": files_json(self.files),
            "mirrors": mirrors_json(self.mirrors),
            "countries": countries_json(self.countries),
            "per_day": series_json(self.days),
        }


# --- JSON shapes, shared with the API ------------------------------------------------------


def files_json(rows: Sequence[Total]) -> list[dict[str, Any]]:
    return [{"path": r.key, "downloads": r.downloads, "bytes": r.bytes} for r in rows]


def mirrors_json(rows: Sequence[Total]) -> list[dict[str, Any]]:
    """``mirror`` is null for downloads the origin served."""
    return [{"mirror": r.key or None, "downloads": r.downloads, "bytes": r.bytes} for r in rows]


def countries_json(rows: Sequence[Total]) -> list[dict[str, Any]]:
    """``country`` is null for clients whose country is unknown."""
    return [{"country": r.key or None, "downloads": r.downloads, "bytes": r.bytes} for r in rows]


def series_json(rows: Sequence[DayTotal], key: str = "day") -> list[dict[str, Any]]:
    return [{key: r.day.isoformat(), "downloads": r.downloads, "bytes": r.bytes} for r in rows]


# --- queries --------------------------------------------------------------------------------


async def _totals(
    session: AsyncSession, model: Any, column: Any, period: Period, limit: int | None
) -> list[Total]:
    downloads = func.sum(model.downloads)
    stmt = (
        select(column, downloads, func.sum(model.bytes))
        .where(model.day >= period.first, model.day <= period.last)
        .group_by(column)
        .order_by(downloads.desc(), column)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = (await session.execute(stmt)).all()
    return [Total(k, int(d or 0), int(b or 0)) for k, d, b in rows]


async def top_files(session: AsyncSession, period: Period, limit: int = 20) -> list[Total]:
    return await _totals(session, StatsFileDailyRow, StatsFileDailyRow.path, period, limit)


async def per_mirror(
    session: AsyncSession, period: Period, limit: int | None = None
) -> list[Total]:
    return await _totals(session, StatsMirrorDailyRow, StatsMirrorDailyRow.mirror, period, limit)


async def per_country(
    session: AsyncSession, period: Period, limit: int | None = None
) -> list[Total]:
    return await _totals(session, StatsCountryDailyRow, StatsCountryDailyRow.country, period, limit)


async def per_day(session: AsyncSession, period: Period) -> list[DayTotal]:
    """One entry per day of the period (0 for days without downloads), oldest first."""
    stmt = (
        select(
            StatsMirrorDailyRow.day,
            func.sum(StatsMirrorDailyRow.downloads),
            func.sum(StatsMirrorDailyRow.bytes),
        )
        .where(StatsMirrorDailyRow.day >= period.first, StatsMirrorDailyRow.day <= period.last)
        .group_by(StatsMirrorDailyRow.day)
    )
    found = {d: (int(n or 0), int(b or 0)) for d, n, b in (await session.execute(stmt)).all()}
    return fill_days(period, found)


async def file_per_day(session: AsyncSession, path: str, period: Period) -> list[DayTotal]:
    """One file's downloads per day of the period."""
    stmt = select(
        StatsFileDailyRow.day, StatsFileDailyRow.downloads, StatsFileDailyRow.bytes
    ).where(
        StatsFileDailyRow.path == path,
        StatsFileDailyRow.day >= period.first,
        StatsFileDailyRow.day <= period.last,
    )
    found = {d: (int(n), int(b)) for d, n, b in (await session.execute(stmt)).all()}
    return fill_days(period, found)


async def per_month(session: AsyncSession) -> list[DayTotal]:
    """Downloads per month since the beginning: monthly totals plus the daily rows kept."""
    months: dict[date, list[int]] = {}
    monthly = (
        select(
            StatsMonthlyRow.month,
            func.sum(StatsMonthlyRow.downloads),
            func.sum(StatsMonthlyRow.bytes),
        )
        .where(StatsMonthlyRow.kind == "mirror")
        .group_by(StatsMonthlyRow.month)
    )
    for month, n, b in (await session.execute(monthly)).all():
        _add_month(months, month, int(n or 0), int(b or 0))
    daily = select(
        StatsMirrorDailyRow.day,
        func.sum(StatsMirrorDailyRow.downloads),
        func.sum(StatsMirrorDailyRow.bytes),
    ).group_by(StatsMirrorDailyRow.day)
    for day, n, b in (await session.execute(daily)).all():
        _add_month(months, day, int(n or 0), int(b or 0))
    return [DayTotal(m, n, b) for m, (n, b) in sorted(months.items())]


async def summary(session: AsyncSession, period: Period, limit: int = 20) -> Summary:
    files = await top_files(session, period, limit)
    mirrors = await per_mirror(session, period)
    countries = await per_country(session, period)
    days = await per_day(session, period)
    return Summary(
        period,
        sum(d.downloads for d in days),
        sum(d.bytes for d in days),
        files,
        mirrors,
        countries,
        days,
    )


# --- pure helpers ---------------------------------------------------------------------------


def fill_days(period: Period, found: dict[date, tuple[int, int]]) -> list[DayTotal]:
    out = []
    day = period.first
    while day <= period.last:
        n, b = found.get(day, (0, 0))
        out.append(DayTotal(day, n, b))
        day += timedelta(days=1)
    return out


def _add_month(months: dict[date, list[int]], day: date, n: int, b: int) -> None:
    entry = months.setdefault(day.replace(day=1), [0, 0])
    entry[0] += n
    entry[1] += b
