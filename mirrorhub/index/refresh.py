"""Keeping a dispatcher's index current: apply the changes since its version in place,
or build a new one when that cannot be done (first start, a gap in the change log, a
mirror removed, too many files changed)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol

from mirrorhub.heap import release_free_heap_later
from mirrorhub.index.build import build_index
from mirrorhub.index.delta import apply_delta
from mirrorhub.index.snapshot import Index, NeedsRebuild
from mirrorhub.index.source import IndexConfig, IndexDelta, IndexSource

VERSION_CHECK_TIMEOUT = 5.0  # seconds the index-version query may take before "database down"
# Past this many changed files one full build is cheaper than writing them one by one.
MAX_DELTA_FILES = 200_000
TRIM_DELAY = 2.0  # seconds after a full build before freed heap goes back to the OS
log = logging.getLogger(__name__)


class IndexLoader(Protocol):
    """Where an index's data comes from (the database: mirrorhub.db.index_load)."""

    async def version(self) -> int: ...

    async def changed_files(self, since: int, upto: int) -> frozenset[int] | None:
        """The files changed after version ``since`` up to ``upto``; None when not known."""

    async def delta(self, version: int, file_ids: frozenset[int]) -> IndexDelta: ...

    async def build(self, config: IndexConfig, clock: Callable[[], float]) -> Index: ...


@dataclass
class RefreshCounts:
    full_builds: int = 0
    deltas: int = 0
    delta_files: int = 0
    last_seconds: float = 0.0  # how long the last build or delta took


class IndexHolder:
    """Holds the current index; the refresher changes it in place or swaps in a new one."""

    def __init__(self, initial: Index) -> None:
        self.current = initial
        self.last_check: float | None = None  # last time the database answered
        self.last_error: str | None = None  # why the last check failed, if it did
        self.counts = RefreshCounts()

    @property
    def database_ok(self) -> bool:
        return self.last_error is None


class SourceLoader:
    """A loader over callables that return whole sources (tests, tools): always builds."""

    def __init__(
        self,
        load_version: Callable[[], Awaitable[int]],
        load_source: Callable[[], Awaitable[IndexSource]],
    ) -> None:
        self._version = load_version
        self._source = load_source

    async def version(self) -> int:
        return await self._version()

    async def changed_files(self, since: int, upto: int) -> frozenset[int] | None:
        return None

    async def delta(self, version: int, file_ids: frozenset[int]) -> IndexDelta:
        raise NotImplementedError("SourceLoader knows no changes")  # pragma: no cover

    async def build(self, config: IndexConfig, clock: Callable[[], float]) -> Index:
        source = await self._source()
        return await asyncio.to_thread(build_index, source, config, clock)


async def refresh_once(
    holder: IndexHolder,
    loader: IndexLoader,
    config: IndexConfig,
    clock: Callable[[], float] = time.time,
) -> bool:
    """Bring the index to the database's version; True when it changed.

    A database error keeps the last good index and is remembered for the status page.
    """
    try:
        # A database behind a dead link (no RST) would hang the check for the driver's
        # connect timeout (60 s with asyncpg) while /-/health still said "ok".
        version = await asyncio.wait_for(loader.version(), VERSION_CHECK_TIMEOUT)
        current = holder.current
        if version == current.version:
            holder.last_check, holder.last_error = clock(), None
            return False
        started = time.perf_counter()
        if not await _apply_changes(holder, loader, current, version, clock):
            del current  # nothing here may keep the old index alive from now on
            holder.current = await loader.build(config, clock)
            holder.counts.full_builds += 1
            # The index is millions of long-lived objects: a full collection walking them
            # all would stall every request for ~0.1 s now and then. Frozen objects are
            # still freed when no longer referenced (an older index), just never scanned.
            gc.freeze()
            # The build's peak (and the old index, once the dispatcher's caches let go of
            # it at the next requests) would otherwise stay resident.
            release_free_heap_later(TRIM_DELAY)
        holder.counts.last_seconds = time.perf_counter() - started
    except Exception as exc:  # any failure of the database must leave the index alone
        holder.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("index refresh failed, keeping version %s: %s", holder.current.version, exc)
        return False
    holder.last_check, holder.last_error = clock(), None
    return True


async def _apply_changes(
    holder: IndexHolder, loader: IndexLoader, index: Index, version: int, clock: Callable[[], float]
) -> bool:
    """Write the changes up to ``version`` into ``index``; False when it needs a new build."""
    if index.version < 0 or version < index.version:
        return False
    changed = await loader.changed_files(index.version, version)
    if changed is None or len(changed) > MAX_DELTA_FILES:
        return False
    delta = await loader.delta(version, changed)
    try:
        written = await apply_delta(index, delta)
    except NeedsRebuild as exc:
        log.info("index: %s; rebuilding", exc)
        return False
    index.built_at = clock()
    holder.counts.deltas += 1
    holder.counts.delta_files += written
    return True


async def refresh_loop(
    holder: IndexHolder,
    loader: IndexLoader,
    config: IndexConfig,
    interval: float,
    clock: Callable[[], float] = time.time,
    wake: asyncio.Event | None = None,
) -> None:
    """Check every ``interval`` seconds, or at once when ``wake`` is set (a PostgreSQL
    notification, see mirrorhub/notify.py); the timed check is the fallback."""
    while True:
        if wake is not None:
            wake.clear()  # before the check: a change committed during it wakes us again
        await refresh_once(holder, loader, config, clock)
        if wake is None:
            await asyncio.sleep(interval)
            continue
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
