"""The dispatcher's index, read from the database: whole, streamed a page at a time, or only
the files changed since a version (the ``index_changes`` log).

A full build reads files by id range and, for the same range, the differences already
grouped by file in SQL (one row per file instead of one per (mirror, file): 3.7 million
rows become 0.8 million at 1,000,000 files x 200 mirrors), and fills the new index from
each page in a thread while the event loop keeps answering from the old one.

On SQLite with many files, a child process reads the differences meanwhile (its own GIL:
see :mod:`.diff_reader`) and the parent only reads and fills the files; when the child
fails, answers late or from an older version, the differences are read here after all.

Consistency: the version is read first. Whatever commits while the rest is read has a
newer version, and its change-log entry makes the next refresh re-read those files, so an
index is never labelled newer than its data and converges. (The child reads at a version
at least as new, in one snapshot, and says which; it starts after the version was read.)
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
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
from mirrorhub.selection.ranking import KIND_MISSING, KIND_OUTDATED

from . import changelog, diff_reader
from .models import MirrorRow, MirrorStateRow
from .repositories import current_version, row_to_mirror, row_to_state

PAGE = 20_000  # files per page of a full build
ID_CHUNK = 250  # ids per lookup of a change set (each chunk is converted on the loop: ~2 ms)
# A full build on SQLite reads the differences in a child process from this many files on
# (by the largest file id). Medians of 9 builds each way, load average 4-5: 30,000 files
# 0.63 s with a child vs 0.54 s without, 50,000 0.81-0.84 vs 0.70-0.92, 100,000 1.39 vs 1.65.
PROCESS_MIN_FILES = 100_000
PROCESS_TIMEOUT = 120.0  # seconds the child may still take once the files are in
READER_SCRIPT = diff_reader.__file__

log = logging.getLogger(__name__)


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
_LAST_ID = Query("SELECT max(id) FROM origin_files", "SELECT max(id) FROM origin_files")
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
    builder.add_files(files, diffs_follow=bool(groups))
    if groups:
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


class DiffProcess:
    """A running :mod:`.diff_reader` child."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self._proc = proc

    @classmethod
    def start(cls, database: str, mirror_ids: Sequence[int]) -> DiffProcess:
        # -I -S: no site, no environment, no script directory on the path: stdlib only.
        command = [sys.executable, "-I", "-S", READER_SCRIPT, database]
        command.append(",".join(str(m) for m in mirror_ids))
        proc = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        return cls(proc)

    def result(self, timeout: float) -> diff_reader.DiffSets:
        """Waits for the child (blocking: call it in a thread); raises RuntimeError."""
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise RuntimeError(f"no answer within {timeout:.0f} s") from None
        if self._proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"exit status {self._proc.returncode}: {tail[0]}")
        try:
            return diff_reader.decode(out)
        except ValueError as exc:
            raise RuntimeError(f"unreadable result: {exc}") from exc

    def stop(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


class DatabaseLoader:
    """:class:`mirrorhub.index.IndexLoader` over the database.

    ``process_min_files``: from how many files (by the largest id) a full build on SQLite
    reads the differences in a child process; None: never. ``diff_source`` says how the
    last full build read them: "in-process", "process" or "fallback" (the child failed).
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        *,
        process_min_files: int | None = PROCESS_MIN_FILES,
    ) -> None:
        self._sessions = sessions
        self._mirrors = MirrorReader()
        self._process_min_files = process_min_files
        self.diff_source = ""

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
            child = await self._start_child(conn, builder)  # after the version: as new or newer
            try:
                after = -1
                while page := await _file_page(conn, after):
                    after = page[-1][0]
                    groups = [] if child else await _fetch(conn, _GROUPS_BETWEEN, page[0][0], after)
                    # Filling runs in a thread so the event loop keeps answering from the old
                    # index. Not overlapped with the next read: a busy thread holding the GIL
                    # stalls the driver's thread at every row (measured slower than in turn).
                    await asyncio.to_thread(_fill, builder, page, groups)
                if child is not None and not await self._take_child(child, builder, version):
                    self.diff_source = "fallback"
                    await _read_groups_after(conn, builder)
            finally:
                if child is not None:
                    child.stop()
            builder.add_confirmations(await _fetch(conn, _CONFIRMATIONS))
        return builder.finish()

    async def _start_child(
        self, conn: AsyncConnection, builder: IndexBuilder
    ) -> DiffProcess | None:
        """The child reading the differences, if this build should have one."""
        self.diff_source = "in-process"
        database = conn.engine.url.database
        if (
            self._process_min_files is None
            or conn.dialect.name != "sqlite"
            or not database
            or database == ":memory:"
            or database.startswith("file:")
        ):
            return None
        last = (await _fetch(conn, _LAST_ID))[0][0]
        if last is None or last < self._process_min_files:
            return None
        positions = builder.index.mirror_positions()
        try:
            child = DiffProcess.start(database, sorted(positions, key=positions.__getitem__))
        except OSError as exc:
            log.warning("differences read in-process: no child process (%s)", exc)
            self.diff_source = "fallback"
            return None
        self.diff_source = "process"
        return child

    async def _take_child(self, child: DiffProcess, builder: IndexBuilder, version: int) -> bool:
        try:
            sets = await asyncio.to_thread(child.result, PROCESS_TIMEOUT)
            if sets.version < version:
                raise RuntimeError(f"read version {sets.version}, older than {version}")
        except RuntimeError as exc:
            log.warning("differences read in-process: the child process failed (%s)", exc)
            return False
        await asyncio.to_thread(
            builder.add_diff_sets,
            sets.file_ids,
            sets.set_of,
            sets.offsets,
            sets.positions,
            sets.kinds,
        )
        return True

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


async def _read_groups_after(conn: AsyncConnection, builder: IndexBuilder) -> None:
    """The differences of the files already in ``builder``, a page of file ids at a time."""
    ids = builder.index.file_ids
    for start in range(0, len(ids), PAGE):
        first, last = ids[start], ids[min(start + PAGE, len(ids)) - 1]
        groups = await _fetch(conn, _GROUPS_BETWEEN, first, last)
        await asyncio.to_thread(builder.add_diff_lists, groups)


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
