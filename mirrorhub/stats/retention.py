"""Keep the statistics tables bounded: old daily rows become monthly totals.

Daily rows (files, mirrors, countries) older than ``stats_raw_days`` UTC days are added to
``stats_monthly`` (one row per month, kind and key) and deleted, all in one transaction.
Moving rows is idempotent and exactly-once even if two workers ran it at once:

- PostgreSQL: ``WITH moved AS (DELETE ... RETURNING ...) INSERT INTO stats_monthly SELECT
  ... FROM moved ... ON CONFLICT DO UPDATE`` adds exactly the rows this statement deleted;
  a concurrent run blocks on those rows and then finds them gone.
- SQLite: one writer at a time; the ``INSERT ... SELECT`` and the ``DELETE`` share one write
  transaction with the same cut-off, so what was added is what is deleted.

A second run finds nothing older than the cut-off and changes nothing. Run it from the
worker's hourly ``retention`` job (:func:`apply_stats_retention`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.settings import Settings

# kind in stats_monthly -> (daily table, key column)
DAILY = {
    "file": ("stats_file_daily", "path"),
    "mirror": ("stats_mirror_daily", "mirror"),
    "country": ("stats_country_daily", "country"),
}

_UPSERT = (
    " ON CONFLICT (month, kind, key) DO UPDATE SET"
    " downloads = stats_monthly.downloads + excluded.downloads,"
    " bytes = stats_monthly.bytes + excluded.bytes"
)


@dataclass(frozen=True, slots=True)
class StatsRetentionReport:
    cutoff: date  # daily rows before this day were moved
    moved: dict[str, int]  # kind -> daily rows rolled into monthly totals


def cutoff_day(now: float, raw_days: int) -> date:
    """The first UTC day still kept as daily rows (today counts as one of ``raw_days``)."""
    today = datetime.fromtimestamp(now, UTC).date()
    return today - timedelta(days=max(raw_days, 1) - 1)


# The statements below interpolate only the constant table and column names of DAILY.


def _postgres_sql(kind: str) -> str:
    table, column = DAILY[kind]
    return (
        f"WITH moved AS (DELETE FROM {table} WHERE day < :cutoff"  # noqa: S608
        f" RETURNING day, {column} AS key, downloads, bytes),"
        f" added AS (INSERT INTO stats_monthly (month, kind, key, downloads, bytes)"
        f" SELECT CAST(date_trunc('month', day) AS date), '{kind}', key,"
        f" sum(downloads), sum(bytes) FROM moved GROUP BY 1, 3" + _UPSERT + ")"
        " SELECT count(*) FROM moved"
    )


def _sqlite_sql(kind: str) -> tuple[str, str]:
    table, column = DAILY[kind]
    # WHERE before GROUP BY also keeps SQLite's parser from reading ON CONFLICT as a join.
    insert = (
        f"INSERT INTO stats_monthly (month, kind, key, downloads, bytes)"  # noqa: S608
        f" SELECT date(day, 'start of month'), '{kind}', {column},"
        f" sum(downloads), sum(bytes) FROM {table} WHERE day < :cutoff"
        f" GROUP BY date(day, 'start of month'), {column}" + _UPSERT
    )
    return insert, f"DELETE FROM {table} WHERE day < :cutoff"  # noqa: S608


async def roll_up(session: AsyncSession, cutoff: date) -> dict[str, int]:
    """Move daily rows before ``cutoff`` into monthly totals (caller commits)."""
    conn = await session.connection()
    postgres = conn.dialect.name == "postgresql"
    moved: dict[str, int] = {}
    for kind in DAILY:
        if postgres:
            result = await session.execute(text(_postgres_sql(kind)), {"cutoff": cutoff})
            moved[kind] = int(result.scalar_one())
        else:
            insert, delete = _sqlite_sql(kind)
            # SQLAlchemy stores SQLite dates as ISO text, which sorts like the dates.
            await session.execute(text(insert), {"cutoff": cutoff.isoformat()})
            result = await session.execute(text(delete), {"cutoff": cutoff.isoformat()})
            moved[kind] = result.rowcount  # type: ignore[attr-defined]  # daily rows deleted
    return moved


async def apply_stats_retention(
    sessions: async_sessionmaker[AsyncSession],
    settings: Settings,
    clock: Callable[[], float] = time.time,
) -> StatsRetentionReport:
    """Roll daily statistics older than ``settings.stats_raw_days`` into monthly totals."""
    cutoff = cutoff_day(clock(), settings.stats_raw_days)
    async with sessions() as session, session.begin():
        moved = await roll_up(session, cutoff)
    return StatsRetentionReport(cutoff, moved)
