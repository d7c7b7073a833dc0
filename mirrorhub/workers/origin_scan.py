"""The origin scan: walk the published tree, reconcile it with ``origin_files``, hash what is
new or changed, and write the difference in batches.

Shape, for a million files:

1. load ``path -> (id, size, mtime)`` from the database (plain tuples, streamed);
2. walk + diff in a worker thread (:func:`diff_origin` is pure and consumes the walk lazily,
   so only new and changed files are held);
3. delete the rows of removed files (``mirror_file_diffs`` rows cascade);
4. sha256 only new and changed files in a thread pool, and write them as they come, one
   transaction per batch with Core bulk INSERT / UPDATE, then a short one to stamp the batch
   (below).

``changed_at`` is stamped in two steps, because a clock reading taken inside the transaction
is not enough. A mirror scan reads its clock (its ``last_good_scan`` to be) and only then
reads ``origin_files``; if that read began before the batch committed, the scan compared
against the old rows and recorded no difference for the new version. Any clock reading the
writer takes before its commit may still be earlier than that scan's start, and the mirror
would then count as fresh for a version it never saw. So:

1. the batch is written with ``changed_at = CHANGE_PENDING`` (later than any clock reading:
   every mirror is stale for the file, which the origin serves meanwhile) and committed;
2. only then the clock is read, and a second short transaction sets ``changed_at`` to it.

A mirror scan whose read of ``origin_files`` missed the batch began that read before the
commit, so it read its clock before the commit too, hence before the stamp: it stays stale
for the file until a later scan or a targeted re-check sees the new version. A scan that saw
the batch compared against the new version, whatever its clock says. (Workers on different
machines must keep their clocks in step, as for every comparison of these times.)

Scans rarely overlap (workers and ``mirrorhub scan-origin`` share the ``origin-scan``
lease), but a lease can run out under a scan that is still going, so a stamp is conditional
on what its own scan wrote: a row is stamped only while it still holds
the size, mtime and sha256 this scan committed (or, for the repair below, found pending).
Otherwise another scan wrote a different version after this scan's commit, perhaps after
this scan read its clock; a mirror scan that started after that reading and compared the
earlier version would count as fresh for the later one. That version stays pending
until its own writer stamps it (or the next scan repairs it). When another scan wrote the
same facts, stamping its row is harmless: a mirror compared against the same version either
way. A matching row is moved from ``CHANGE_PENDING``, or from an earlier time to this one
("raise"), never to an earlier time. Raising only ever makes mirrors stale for longer, never
fresh, and it makes the last writer of a version win with its own reading, which is valid
for what it wrote. One case the facts cannot tell apart: a stamp held up while other scans
took the row to another version and back to the very same size, mtime and sha256 could date
the returned version with its earlier reading, so a mirror scan that compared the middle
version in between would count as fresh. That lasts until the scan that wrote the version
back stamps it (raising the time to its own later reading) or, should that scan die, until
the mirror's next scan compares the version. It takes three writes of one row by
overlapping scans within one stamp's delay, and a revert to identical facts; a token per
write in ``changed_at`` would close it, at the price of many distinct pending values.

A scan that dies between the two steps leaves rows at ``CHANGE_PENDING`` (safe: served from
the origin). The next scan first reads the pending rows with their facts, only then reads
its clock (so after their commits), and stamps them on the same condition, even when it has
nothing else to write.

Every write transaction, every stamp transaction and every delete bumps ``index_version``
with the files it touched. The write announces its rows while still pending: should the
stamp never run (crash, Ctrl-C, lost connection), dispatchers still drop the old version of
a changed file and learn of a new one, treating it as just changed (every mirror stale, the
origin serves it, or a stale copy inside an ``allow_outdated`` window), instead of keeping
the old picture until the next origin scan. The stamp announces the files again, so
dispatchers take the new time.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import stat
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar, cast

from sqlalchemy import Table, bindparam, delete, insert, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import OriginFileRow
from mirrorhub.db.repositories import bump_version
from mirrorhub.domain import CHANGE_PENDING
from mirrorhub.errors import ScanFailed
from mirrorhub.workers.origin_walk import Skipped, WalkedFile, walk_origin

log = logging.getLogger(__name__)

ORIGIN_FILES = cast(Table, OriginFileRow.__table__)
READ_CHUNK = 1 << 20  # bytes per read while hashing
ROW_BATCH = 5000  # rows per write transaction
MAX_CHANGED_PATHS = 10_000  # beyond this the result only says "too many, re-check all"
HASH_ATTEMPTS = 3  # a file still changing after this many tries is skipped until next scan
_HASH_TASK_FILES = 256  # files per thread-pool task: amortises the hop for small files
_HASH_TASK_BYTES = 64 << 20
_HASH_TASKS_IN_FLIGHT = 32  # results only (no file data): cheap to hold
_WALK_REPORT_EVERY = 1000

DbEntry = tuple[int, int, int]  # (id, size, mtime)
_T = TypeVar("_T")


# --- results and progress ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OriginScanResult:
    seen: int  # publishable files found by the walk
    new: int  # rows inserted
    changed: int  # rows updated (size or mtime differed)
    unchanged: int
    deleted: int
    skipped: int  # entries not published, plus files that could not be hashed
    bytes_hashed: int
    duration: float  # seconds
    # New and changed paths, sorted, for the targeted re-check on every mirror; empty with
    # ``changed_overflow`` set when there are more than MAX_CHANGED_PATHS.
    changed_paths: tuple[str, ...] = ()
    changed_overflow: bool = False

    @property
    def any_change(self) -> bool:
        return bool(self.new or self.changed or self.deleted)


@dataclass(frozen=True, slots=True)
class ScanProgress:
    phase: Literal["walk", "hash", "done"]
    walked: int  # publishable files found so far
    to_hash: int = 0  # new + changed files (known once the walk is over)
    hashed: int = 0  # of those, files done (hashed, or given up until the next scan)
    bytes_to_hash: int = 0  # their sizes as walked
    bytes_hashed: int = 0


# Called on the event-loop thread; keep it cheap.
ProgressCallback = Callable[[ScanProgress], None]


# --- the pure part ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OriginDiff:
    new: list[WalkedFile]
    changed: list[tuple[int, WalkedFile]]  # (row id, as walked)
    unchanged: int
    deleted: list[int]  # row ids
    seen: int
    skipped: int


def diff_origin(db: Mapping[str, DbEntry], walked: Iterable[WalkedFile | Skipped]) -> OriginDiff:
    """Compare database rows with the walk. Consumes ``walked`` once, lazily.

    A row is deleted when the walk did not see its path, unless it lies under an entry the
    walk could not read (``Skipped.keep``): those rows are kept as they are.
    """
    new: list[WalkedFile] = []
    changed: list[tuple[int, WalkedFile]] = []
    matched: set[int] = set()
    keep_exact: set[str] = set()
    keep_dirs: set[str] = set()
    unchanged = seen = skipped = 0
    for item in walked:
        if isinstance(item, Skipped):
            skipped += 1
            if item.keep:
                (keep_dirs if item.path.endswith("/") else keep_exact).add(item.path)
            continue
        seen += 1
        row = db.get(item.path)
        if row is None:
            new.append(item)
            continue
        matched.add(row[0])
        if row[1] == item.size and row[2] == item.mtime:
            unchanged += 1
        else:
            changed.append((row[0], item))
    prefixes = tuple(keep_dirs)
    deleted = [
        row[0]
        for path, row in db.items()
        if row[0] not in matched
        and path not in keep_exact
        and not (prefixes and path.startswith(prefixes))
    ]
    return OriginDiff(new, changed, unchanged, deleted, seen, skipped)


# --- hashing (runs in worker threads) ---------------------------------------------------


class FileHash(NamedTuple):
    size: int
    mtime: int
    sha256: str  # hex


class FileChanged(Exception):
    """The file was modified or replaced while it was read; try again."""


class NotRegularFile(OSError):
    pass


def _version(st: os.stat_result) -> tuple[int, ...]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def hash_file(path: str, buffer: bytearray | None = None) -> FileHash:
    """sha256 of ``path`` with the size and mtime of the very version that was read.

    Raises FileChanged when the file changed or was replaced (rsync renames over it) during
    the read, and OSError when it cannot be read (FileNotFoundError: it vanished).
    """
    view = memoryview(buffer if buffer is not None else bytearray(READ_CHUNK))
    # O_NONBLOCK: should a FIFO have replaced the file since the walk, open must not hang.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    with open(fd, "rb", buffering=0) as f:
        before = os.fstat(fd)
        if not stat.S_ISREG(before.st_mode):
            raise NotRegularFile(f"{path} is not a regular file")
        digest = hashlib.sha256()
        total = 0
        while n := f.readinto(view):
            digest.update(view[:n])
            total += n
    after = os.stat(path)
    if _version(after) != _version(before) or total != before.st_size:
        raise FileChanged(path)
    return FileHash(before.st_size, before.st_mtime_ns // 1_000_000_000, digest.hexdigest())


class HashJob(NamedTuple):
    file: WalkedFile
    row_id: int | None  # None: a new file


class HashOutcome(NamedTuple):
    job: HashJob
    result: FileHash | None
    reason: str = ""  # why result is None


def _hash_job(root: str, job: HashJob, buffer: bytearray) -> HashOutcome:
    path = os.path.join(root, job.file.path)
    for _ in range(HASH_ATTEMPTS):
        try:
            return HashOutcome(job, hash_file(path, buffer))
        except FileChanged:
            continue
        except FileNotFoundError:
            return HashOutcome(job, None, "vanished before it was hashed")
        except OSError as exc:
            return HashOutcome(job, None, f"cannot read: {exc.strerror or exc}")
    return HashOutcome(job, None, "kept changing while it was hashed")


def _hash_task(root: str, jobs: Sequence[HashJob]) -> list[HashOutcome]:
    buffer = bytearray(READ_CHUNK)  # one per task, not per file: small files are the common case
    return [_hash_job(root, job, buffer) for job in jobs]


def _tasks(jobs: Iterable[HashJob]) -> Iterator[list[HashJob]]:
    task: list[HashJob] = []
    size = 0
    for job in jobs:
        task.append(job)
        size += job.file.size
        if len(task) >= _HASH_TASK_FILES or size >= _HASH_TASK_BYTES:
            yield task
            task, size = [], 0
    if task:
        yield task


# --- the driver ---------------------------------------------------------------------------


async def scan_origin(
    sessions: async_sessionmaker[AsyncSession],
    origin_dir: Path | str,
    *,
    clock: Callable[[], float] = time.time,
    progress: ProgressCallback | None = None,
    hash_workers: int = 4,
    batch_size: int = ROW_BATCH,
    allow_empty: bool = False,
) -> OriginScanResult:
    """Bring ``origin_files`` in line with ``origin_dir``; see the module docstring.

    Raises ScanFailed when the directory is missing or unreadable, when it is empty while the
    table is not (an unmounted volume must not unpublish everything; ``allow_empty`` says it
    really is empty), or on a database error. Work committed before a failure stays.
    """
    started = time.perf_counter()
    root = _origin_root(origin_dir)
    report: ProgressCallback = progress or _ignore
    try:
        pending = await _pending_rows(sessions)
        if pending:  # left by a scan that died between writing and stamping
            log.warning("origin scan: stamping %d files a previous scan left pending", len(pending))
            await stamp_changes(sessions, pending, clock, batch_size)
        db = await _load_rows(sessions)
        diff = await _walk_and_diff(root, db, report)
        if diff.seen == 0 and db and not allow_empty:
            raise ScanFailed(
                f"origin directory {root} has no files; refusing to unpublish {len(db)} "
                "(is it mounted?)"
            )
        del db  # the biggest structure of the scan; the rest only needs the diff
        for ids in _batched(diff.deleted, batch_size):
            async with sessions() as session, session.begin():
                await session.execute(delete(ORIGIN_FILES).where(ORIGIN_FILES.c.id.in_(ids)))
                await bump_version(session, files=ids)
        jobs = [HashJob(f, None) for f in diff.new]
        jobs += [HashJob(f, row_id) for row_id, f in diff.changed]
        jobs.sort(key=lambda job: job.file.path)
        writer = _Writer(sessions, clock, batch_size)
        await _hash_and_write(root, jobs, writer, report, diff.seen, hash_workers, batch_size)
    except SQLAlchemyError as exc:
        raise ScanFailed(f"origin scan: database error: {exc}") from exc
    result = OriginScanResult(
        seen=diff.seen,
        new=writer.new,
        changed=writer.changed,
        unchanged=diff.unchanged,
        deleted=len(diff.deleted),
        skipped=diff.skipped + writer.skipped,
        bytes_hashed=writer.bytes_hashed,
        duration=time.perf_counter() - started,
        changed_paths=() if writer.overflow else tuple(writer.paths),
        changed_overflow=writer.overflow,
    )
    hashed = writer.bytes_hashed
    report(ScanProgress("done", diff.seen, len(jobs), len(jobs), hashed, hashed))
    return result


def _ignore(_: ScanProgress) -> None:
    pass


def _origin_root(origin_dir: Path | str) -> str:
    root = os.fspath(origin_dir)
    if not os.path.isdir(root):
        raise ScanFailed(f"MIRRORHUB_ORIGIN_DIR: {root} does not exist or is not a directory")
    return os.path.realpath(root)


async def _load_rows(sessions: async_sessionmaker[AsyncSession]) -> dict[str, DbEntry]:
    t = ORIGIN_FILES
    rows: dict[str, DbEntry] = {}
    stmt = select(t.c.path, t.c.id, t.c.size, t.c.mtime).execution_options(yield_per=10_000)
    async with sessions() as session:
        result = await session.stream(stmt)
        async for part in result.partitions():
            for path, row_id, size, mtime in part:
                rows[path] = (row_id, size, mtime)
    return rows


async def _pending_rows(sessions: async_sessionmaker[AsyncSession]) -> list[Written]:
    """Rows at CHANGE_PENDING with their facts: one scan of the table, with no index on
    ``changed_at`` (about 70 ms at 1,000,000 rows, against seconds for :func:`_load_rows`; an
    index would cost on every write instead). The caller reads its clock after this read, so
    after the commits of the rows it found."""
    async with sessions() as session:
        found = await session.execute(
            select(_c.id, _c.size, _c.mtime, _c.sha256).where(_c.changed_at >= CHANGE_PENDING)
        )
        return [Written(*row) for row in found]


async def _walk_and_diff(root: str, db: dict[str, DbEntry], report: ProgressCallback) -> OriginDiff:
    loop = asyncio.get_running_loop()

    def observed() -> Iterator[WalkedFile | Skipped]:  # runs in the walk thread
        walked = 0
        for item in walk_origin(root):
            if isinstance(item, Skipped):
                _log_skip(item)
            else:
                walked += 1
                if walked % _WALK_REPORT_EVERY == 0:
                    loop.call_soon_threadsafe(report, ScanProgress("walk", walked))
            yield item
        loop.call_soon_threadsafe(report, ScanProgress("walk", walked))

    try:
        return await asyncio.to_thread(diff_origin, db, observed())
    except OSError as exc:
        raise ScanFailed(f"cannot read the origin directory {root}: {exc.strerror}") from exc


def _log_skip(item: Skipped) -> None:
    if item.keep:
        log.warning("origin scan: %s: %s (its database rows are kept)", item.path, item.reason)
    elif item.reason == "rsync temporary file":
        log.debug("origin scan: %s: %s", item.path, item.reason)
    else:
        log.info("origin scan: %s: not published: %s", item.path, item.reason)


async def _hash_and_write(
    root: str,
    jobs: list[HashJob],
    writer: _Writer,
    report: ProgressCallback,
    seen: int,
    workers: int,
    batch_size: int,
) -> None:
    loop = asyncio.get_running_loop()
    bytes_to_hash = sum(job.file.size for job in jobs)
    tasks = _tasks(jobs)
    pending: deque[asyncio.Future[list[HashOutcome]]] = deque()
    done = 0
    executor = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="origin-hash")

    def submit() -> None:
        task = next(tasks, None)
        if task is not None:
            pending.append(loop.run_in_executor(executor, _hash_task, root, task))

    try:
        for _ in range(_HASH_TASKS_IN_FLIGHT):  # enough to keep hashing while a batch is written
            submit()
        while pending:
            outcomes = await pending.popleft()
            submit()
            for outcome in outcomes:
                writer.add(outcome)
            done += len(outcomes)
            if writer.pending >= batch_size:
                await writer.flush()
            report(ScanProgress("hash", seen, len(jobs), done, bytes_to_hash, writer.bytes_hashed))
        await writer.flush()
    finally:
        executor.shutdown(wait=False, cancel_futures=True)


_UPDATE = (
    update(ORIGIN_FILES)
    .where(ORIGIN_FILES.c.id == bindparam("b_id"))
    .values(
        size=bindparam("b_size"),
        mtime=bindparam("b_mtime"),
        sha256=bindparam("b_sha256"),
        changed_at=CHANGE_PENDING,
    )
)


class Written(NamedTuple):
    """A row as a scan wrote it at CHANGE_PENDING: what its stamp is conditional on."""

    id: int
    size: int
    mtime: int
    sha256: str | None


def _row_id(row: Written) -> int:
    return row.id


_c = ORIGIN_FILES.c
_STAMP = (
    update(ORIGIN_FILES)
    .where(
        _c.id == bindparam("s_id"),
        _c.size == bindparam("s_size"),
        _c.mtime == bindparam("s_mtime"),
        _c.sha256.is_not_distinct_from(bindparam("s_sha256")),
        or_(_c.changed_at >= CHANGE_PENDING, _c.changed_at < bindparam("s_now")),
    )
    .values(changed_at=bindparam("s_now"))
)


async def stamp_changes(
    sessions: async_sessionmaker[AsyncSession],
    written: Sequence[Written],
    clock: Callable[[], float],
    batch_size: int = ROW_BATCH,
) -> None:
    """Step 2 of the module docstring: give rows written at CHANGE_PENDING their time.

    Every row in ``written`` must have committed with those facts before this call: the
    clock is read here, so the stamp is later than the commit. A row is stamped only while it
    still holds those facts (size, mtime, sha256), and only from CHANGE_PENDING or to a later
    time, never an earlier one (see the module docstring for why that is safe); each
    transaction announces its files to the dispatchers.
    """
    now = clock()
    ordered = sorted(written, key=_row_id)  # one lock order for every scan's transactions
    for part in _batched(ordered, batch_size):
        params: list[dict[str, Any]] = [
            {"s_id": w.id, "s_size": w.size, "s_mtime": w.mtime, "s_sha256": w.sha256, "s_now": now}
            for w in part
        ]
        async with sessions() as session, session.begin():
            await session.execute(_STAMP, params)
            await bump_version(session, files=[w.id for w in part])


class _Writer:
    """Collects hash outcomes and writes them, one transaction per batch."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], float],
        batch_size: int = ROW_BATCH,
    ):
        self._sessions = sessions
        self._clock = clock
        self._batch_size = batch_size
        self._inserts: list[tuple[str, FileHash]] = []
        self._updates: list[tuple[int, FileHash]] = []
        self.new = self.changed = self.skipped = self.bytes_hashed = 0
        self.paths: list[str] = []
        self.overflow = False

    @property
    def pending(self) -> int:
        return len(self._inserts) + len(self._updates)

    def add(self, outcome: HashOutcome) -> None:
        job, result = outcome.job, outcome.result
        if result is None:
            self.skipped += 1
            log.warning("origin scan: %s: %s; retried next scan", job.file.path, outcome.reason)
            return
        self.bytes_hashed += result.size
        if job.row_id is None:
            self._inserts.append((job.file.path, result))
        else:
            self._updates.append((job.row_id, result))
        if not self.overflow:
            self.paths.append(job.file.path)
            if len(self.paths) > MAX_CHANGED_PATHS:
                self.overflow, self.paths = True, []

    async def flush(self) -> None:
        """Write the batch at CHANGE_PENDING, commit, then stamp it (see the module docstring)."""
        if not self.pending:
            return
        written = [Written(i, h.size, h.mtime, h.sha256) for i, h in self._updates]
        written.sort(key=_row_id)  # by id: one lock order for all scans
        async with self._sessions() as session, session.begin():
            if self._inserts:
                rows: list[dict[str, Any]] = [
                    {
                        "path": p,
                        "size": h.size,
                        "mtime": h.mtime,
                        "sha256": h.sha256,
                        "changed_at": CHANGE_PENDING,
                    }
                    for p, h in self._inserts
                ]
                inserted = await session.execute(
                    insert(ORIGIN_FILES).returning(_c.id, _c.size, _c.mtime, _c.sha256), rows
                )
                new_rows = [Written(*row) for row in inserted]
            else:
                new_rows = []
            if written:
                params: list[dict[str, Any]] = [
                    {"b_id": w.id, "b_size": w.size, "b_mtime": w.mtime, "b_sha256": w.sha256}
                    for w in written
                ]
                await session.execute(_UPDATE, params)
            written += new_rows
            # Announced now, pending: should the stamp never run, dispatchers still learn of
            # the rows (stale on every mirror, served by the origin) instead of keeping the old
            # version, or no file, until the next origin scan.
            await bump_version(session, files=[w.id for w in written])
        self.new += len(self._inserts)
        self.changed += len(self._updates)
        self._inserts, self._updates = [], []
        await stamp_changes(self._sessions, written, self._clock, self._batch_size)


def _batched(items: Sequence[_T], size: int) -> Iterator[Sequence[_T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
