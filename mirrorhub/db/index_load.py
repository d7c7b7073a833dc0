"""The dispatcher's index, read from the database: whole, streamed a page at a time, or only
the files changed since a version (the ``index_changes`` log).

A full build reads files by id range and, for the same range, the differences already
grouped by file in SQL (one row per file instead of one per (mirror, file): 3.7 million
rows become 0.8 million at 1,000,000 files x 200 mirrors), and fills the new index from
each page in a thread while the event loop keeps answering from the old one.

Consistency: the version is read first. Whatever commits while the rest is read has a
newer version, and its change-log entry makes the next refresh re-read those files, so an
index is never labelled newer than its data and converges.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession, async_sessionmaker

from mirrorhub.index import (
    DiffGroup,
    FileTuple,
    Index,
    IndexBuilder,
    IndexConfig,
    IndexDelta,
    IndexSource,
)
from mirrorhub.index.build import paused_gc
from mirrorhub.index.source import Confirmation, MirrorPair
from mirrorhub.selection import KIND_MISSING, KIND_OUTDATED

from . import changelog
from .models import MirrorRow, MirrorStateRow
from .repositories import current_version, row_to_mirror, row_to_state

PAGE = 20_000  # files per page of a full build
ID_CHUNK = 250  # ids per lookup of a change set (each chunk is converted on the loop: ~2 ms)


# The SQL below is assembled from constants only (ruff's S608 cannot tell).
# ruff: noqa: S608


@dataclass(frozen=True)
class Query:
    """One query in both dialects. Bulk reads go straight to the driver: SQLAlchemy's
    result layer costs more than the query itself at a million rows (9 s instead of 2 s
    for the files on SQLite, measured)."""

    sqlite: str
    postgresql: str


_COLUMNS = "id, path, size, mtime, sha256, changed_at"
_FILES = Query(
    f"SELECT {_COLUMNS} FROM origin_files WHERE id > ? ORDER BY id LIMIT ?",
    f"SELECT {_COLUMNS} FROM origin_files WHERE id > $1 ORDER BY id LIMIT $2",
)
# Lists of ids travel as one parameter: a JSON array (SQLite) or an int[] (PostgreSQL).
_IN_SQLITE = "IN (SELECT value FROM json_each(?))"
_FILES_BY_ID = Query(
    f"SELECT {_COLUMNS} FROM origin_files WHERE id {_IN_SQLITE}",
    f"SELECT {_COLUMNS} FROM origin_files WHERE id = ANY($1::int[])",
)
# Each file's differences as one string of codes, mirror id * 2 + 1 if missing: "7,34,85"
# (one aggregate: 0.8 s less than separate lists of ids and kinds at 3.7M rows on SQLite).
_SQLITE_GROUPS = (
    "SELECT file_id, group_concat(mirror_id * 2 + (kind = 'missing')) "
    "FROM mirror_file_diffs WHERE {} GROUP BY file_id"
)
_PG_GROUPS = (
    "SELECT file_id, string_agg((mirror_id * 2 + (kind = 'missing')::int)::text, ',') "
    "FROM mirror_file_diffs WHERE {} GROUP BY file_id"
)
_GROUPS_BETWEEN = Query(
    _SQLITE_GROUPS.format("file_id >= ? AND file_id <= ?"),
    _PG_GROUPS.format("file_id >= $1 AND file_id <= $2"),
)
_GROUPS_BY_ID = Query(
    _SQLITE_GROUPS.format(f"file_id {_IN_SQLITE}"),
    _PG_GROUPS.format("file_id = ANY($1::int[])"),
)
_CONFIRMED = "SELECT mirror_id, file_id, checked_at FROM mirror_file_confirmations"
_CONFIRMATIONS = Query(_CONFIRMED, _CONFIRMED)
_CONFIRMATIONS_BY_ID = Query(
    f"{_CONFIRMED} WHERE file_id {_IN_SQLITE}", f"{_CONFIRMED} WHERE file_id = ANY($1::int[])"
)


class MirrorReader:
    """Reads every mirror with its state as plain rows and converts only rows that changed
    since the last read: an index update re-reads all mirrors, and building 200 ORM objects
    and Mirror values each time held the event loop for 7-16 ms (measured)."""

    def __init__(self) -> None:
        self._known: dict[int, tuple[tuple[Any, ...], tuple[Any, ...] | None, MirrorPair]] = {}

    async def read(self, session: AsyncSession) -> list[MirrorPair]:
        mirrors = MirrorRow.__table__
        states = MirrorStateRow.__table__
        rows = await session.execute(
            select(mirrors, states)
            .select_from(mirrors.outerjoin(states, states.c.mirror_id == mirrors.c.id))
            .order_by(mirrors.c.id)
        )
        width = len(mirrors.columns)
        known, out = self._known, []
        fresh: dict[int, tuple[tuple[Any, ...], tuple[Any, ...] | None, MirrorPair]] = {}
        for row in rows:
            values = tuple(row)
            mirror_part = values[:width]
            state_part = values[width:] if values[width] is not None else None
            hit = known.get(mirror_part[0])
            if hit is None or hit[0] != mirror_part or hit[1] != state_part:
                mirror = row_to_mirror(cast(MirrorRow, row))
                state = row_to_state(cast(MirrorStateRow, row) if state_part else None)
                hit = (mirror_part, state_part, (mirror, state))
            fresh[mirror_part[0]] = hit
            out.append(hit[2])
        self._known = fresh
        return out


async def load_mirrors(session: AsyncSession) -> list[MirrorPair]:
    return await MirrorReader().read(session)


def parse_groups(rows: Iterable[Sequence[Any]]) -> list[DiffGroup]:
    groups: list[DiffGroup] = []
    for file_id, text in rows:
        codes = [int(c) for c in text.split(",")]
        kinds = bytes([KIND_MISSING if c & 1 else KIND_OUTDATED for c in codes])
        groups.append((file_id, [c >> 1 for c in codes], kinds))
    return groups


def _fill(builder: IndexBuilder, files: list[FileTuple], groups: list[Any]) -> None:
    builder.add_files(files)
    builder.add_diff_lists(groups)


async def _fetch(conn: AsyncConnection, query: Query, *params: Any) -> list[Any]:
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    if conn.dialect.name == "postgresql":
        return list(await driver.fetch(query.postgresql, *params))
    cursor = await driver.execute(query.sqlite, params)
    try:
        return list(await cursor.fetchall())
    finally:
        await cursor.close()


def _id_list(conn: AsyncConnection, ids: Sequence[int]) -> Any:
    return list(ids) if conn.dialect.name == "postgresql" else json.dumps(list(ids))


async def _file_page(conn: AsyncConnection, after: int) -> list[FileTuple]:
    # sqlite3 rows are tuples and asyncpg records index and unpack like them: no copy
    return await _fetch(conn, _FILES, after, PAGE)


class DatabaseLoader:
    """:class:`mirrorhub.index.IndexLoader` over the database."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._mirrors = MirrorReader()

    async def version(self) -> int:
        async with self._sessions() as session:
            return await current_version(session)

    async def changed_files(self, since: int, upto: int) -> frozenset[int] | None:
        async with self._sessions() as session:
            return await changelog.changed_files(session, since, upto)

    async def build(self, config: IndexConfig, clock: Callable[[], float]) -> Index:
        # The collector waits for the whole build, not page by page: each page's rows would
        # otherwise set off collections that walk the growing index again and again.
        with paused_gc():  # a plain context manager holds across the awaits inside
            return await self._build(config, clock)

    async def _build(self, config: IndexConfig, clock: Callable[[], float]) -> Index:
        async with self._sessions() as session:
            version = await current_version(session)
            builder = IndexBuilder(config, await self._mirrors.read(session), version, clock)
            conn = await session.connection()
            after = -1
            while page := await _file_page(conn, after):
                after = page[-1][0]
                groups = await _fetch(conn, _GROUPS_BETWEEN, page[0][0], after)
                # Filling runs in a thread so the event loop keeps answering from the old
                # index. Not overlapped with the next read: a busy thread holding the GIL
                # stalls the driver's thread at every row (measured slower than in turn).
                await asyncio.to_thread(_fill, builder, page, groups)
            builder.add_confirmations(await _fetch(conn, _CONFIRMATIONS))
        return builder.finish()

    async def delta(self, version: int, file_ids: frozenset[int]) -> IndexDelta:
        async with self._sessions() as session:
            mirrors = await self._mirrors.read(session)
            conn = await session.connection()
            files: list[FileTuple] = []
            groups: list[DiffGroup] = []
            confirmations: list[Confirmation] = []
            ordered = sorted(file_ids)
            for start in range(0, len(ordered), ID_CHUNK):
                ids = _id_list(conn, ordered[start : start + ID_CHUNK])
                files += [tuple(r) for r in await _fetch(conn, _FILES_BY_ID, ids)]
                groups += parse_groups(await _fetch(conn, _GROUPS_BY_ID, ids))
                confirmations += [tuple(r) for r in await _fetch(conn, _CONFIRMATIONS_BY_ID, ids)]
        return IndexDelta(version, mirrors, file_ids, files, groups, confirmations)


async def load_index_source(session: AsyncSession) -> IndexSource:
    """Everything at once as plain rows (tests and tools; dispatchers use DatabaseLoader)."""
    version = await current_version(session)
    mirrors = await load_mirrors(session)
    conn = await session.connection()
    files: list[FileTuple] = []
    while page := await _file_page(conn, files[-1][0] if files else -1):
        files += [(i, p, s, m, h, c) for i, p, s, m, h, c in page]  # records -> tuples
    diffs: list[tuple[int, int]] = []
    missing: list[tuple[int, int]] = []
    if files:
        for file_id, ids, kinds in parse_groups(
            await _fetch(conn, _GROUPS_BETWEEN, files[0][0], files[-1][0])
        ):
            diffs += [(m, file_id) for m in ids]
            missing += [(m, file_id) for m, k in zip(ids, kinds, strict=True) if k == KIND_MISSING]
    confirmations = [tuple(r) for r in await _fetch(conn, _CONFIRMATIONS)]
    return IndexSource(version, mirrors, files, diffs, missing, confirmations)
