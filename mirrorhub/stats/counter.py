"""The hot-path recorder: counts downloads per UTC day in plain dicts.

Per counted request: one clock read, one dedup store (lookups only for a ranged request)
and three small dict updates (file by index position, mirror, client country). No I/O, no
tuple or string built, and no exception ever escapes :meth:`StatsCounter.record`. Positions
become paths when the flusher takes the counts, a few thousand files per turn of the event
loop (:meth:`DayCounts.settle`), with the snapshot they were counted in.

What counts as a download: a ``GET`` answered with a mirror redirect or by the origin for a
file in the index. ``HEAD``, views, errors and unknown paths do not count. A ``Range``
request from the same client for the same file within ``range_window`` seconds of that
client's previous request for it belongs to the same download (download managers fetch
segments in parallel and resume later) and is not counted again; the window slides with
each request. A plain ``GET`` always counts: it is a new full download.

The dedup key is one int: ``id(Client) ^ hash(request path)``. The Client object stands for
the address (contexts keep it across index versions; hashing an IPv4Address would run Python
code); the request path (``"/" +`` the published path: the dispatcher counts no other
spelling) for the file, because positions change with the index and its string's hash was
cached when the dispatcher looked it up (reading ``index.paths[pos]`` instead costs a cache
miss per request). Two pairs share a key only by a 64-bit accident.

"Same client" is the dispatcher's cached ``Client`` object (one per address, kept across
index versions). A client whose context was evicted from that cache, or who varies the
query string, gets a new one and its next ranged request counts again; a freed object's
id() reused by another client within the window could hide one ranged request. Both are
rare and cost at most one count.

The dedup state is two generations of plain dicts (pair -> time last seen): new sightings
go into the current one, which becomes the previous one (and the previous one is dropped)
once it holds half of ``max_clients``. So it never outgrows ``max_clients`` entries, the
last ``max_clients / 2`` pairs seen are always remembered, and a sighting costs one dict
store (a ranged request, the only kind that can repeat, one or two lookups before it, and a
full generation one more; an ``OrderedDict`` kept in least-recently-seen order cost twice as
much, and its linked nodes miss the cache under load). The window itself is checked with
the stored times; the flusher also drops a generation whose pairs are all older than it
(:meth:`expire`).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from mirrorhub.domain import Outcome
from mirrorhub.index import Index, IndexHolder
from mirrorhub.web.redirect import ClientContext, Recorder, Scope

DAY_SECONDS = 86_400
SETTLE_STEP = 4096  # files turned from positions into paths per turn of the event loop
_MIRROR = Outcome.MIRROR
_ORIGIN = Outcome.ORIGIN

Tally = dict[str, list[int]]  # key -> [downloads, bytes]


@dataclass(slots=True)
class DayCounts:
    """One UTC day's counts, keyed by path, mirror name ("" = origin) and country ("" = unknown).

    As :meth:`StatsCounter.take` hands them out, part of the file counts may still be by
    index position (``positions``): :meth:`settle` adds them to ``files`` by path.
    """

    day: int  # days since 1970-01-01 (UTC)
    files: Tally
    mirrors: Tally
    countries: Tally
    positions: list[tuple[Index, dict[int, int]]] = field(default_factory=list)

    def downloads(self) -> int:
        return sum(c[0] for c in self.mirrors.values())  # every download has one mirror row

    def settle_now(self) -> None:
        for _ in self._settle(SETTLE_STEP):
            pass

    async def settle(self, step: int = SETTLE_STEP) -> None:
        """Turn the positions into paths, letting the event loop run every ``step`` files:
        a wide request mix counts ~165,000 files in a flush interval, ~0.4 s at once."""
        for _ in self._settle(step):
            await asyncio.sleep(0)

    def _settle(self, step: int) -> Iterator[None]:
        # Each step takes its positions out as it adds them: stopped at a yield (a cancelled
        # flush), what is left settles later without counting a file twice.
        files = self.files
        while self.positions:
            index, by_pos = self.positions[0]
            paths, sizes, take = index.paths, index.sizes, by_pos.popitem
            while by_pos:
                chunk = [take() for _ in range(min(step, len(by_pos)))]
                # One comprehension (3x faster than _add per file) where its keys meet
                # none already there: the positions are distinct, but removed files all
                # read "", and ``files`` may hold paths from elsewhere.
                part = {paths[p]: [n, n * sizes[p]] for p, n in chunk}
                distinct = len(part) == len(chunk)
                if distinct and not files:
                    files = self.files = part
                elif distinct and files.keys().isdisjoint(part):
                    files.update(part)
                else:
                    for p, n in chunk:
                        _add(files, paths[p], sizes[p], n)
                yield
            del self.positions[0]


class StatsCounter(Recorder):
    """In-memory download counters; :meth:`swap` hands them to the flusher."""

    def __init__(
        self,
        holder: IndexHolder,
        *,
        range_window: float = 600.0,
        max_clients: int = 100_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._holder = holder
        self._index = holder.current
        self._previous = holder.current  # the index before a swap, for requests in flight
        self._clock = clock
        self._window = range_window
        self._max_clients = max(1, max_clients)
        # id(Client) ^ hash(path) -> last request time: this generation and the one before
        self._seen: dict[int, float] = {}
        self._seen_before: dict[int, float] = {}
        self._generation = max(1, self._max_clients // 2)
        self._newest = float("-inf")  # the latest time stored in _seen
        self._before_newest = float("-inf")  # the same for _seen_before
        self._day = -1
        self._day_end = float("-inf")
        # Today's counts. Files by index position (an int key: no tuple, no string to
        # read) for the snapshot ``_by_pos_index``, and those of earlier snapshots with
        # theirs; made paths by DayCounts.settle once the flusher takes them. ``_files``:
        # counts by path (requests recorded against an index already replaced).
        self._by_pos: defaultdict[int, int] = defaultdict(int)
        self._by_pos_index = holder.current
        self._positions: list[tuple[Index, dict[int, int]]] = []  # of earlier snapshots
        self._files: Tally = {}
        self._mirrors: dict[str | None, list[int]] = {}
        self._countries: dict[str | None, list[int]] = {}
        self._finished: list[DayCounts] = []  # earlier days not swapped out yet
        self.counted = 0  # downloads counted since start (for metrics and tests)
        self.deduplicated = 0  # ranged requests not counted again
        self.lost = 0  # requests whose index snapshot was gone before they were recorded
        self.errors = 0  # unexpected exceptions swallowed

    def record(
        self,
        outcome: Outcome,
        mirror: str | None,
        pos: int | None,
        ctx: ClientContext | None,
        scope: Scope,
        started: float,
    ) -> None:
        if pos is None or ctx is None or (outcome is not _MIRROR and outcome is not _ORIGIN):
            return
        # Few helper calls, no string touched, one small allocation: at this request rate
        # a Python call or a cache miss costs as much as the counting.
        try:
            if scope["method"] != "GET":
                return
            index = self._index
            if index.version != ctx.version:
                found = self._resolve(ctx.version)
                if found is None:
                    self.lost += 1
                    return
                index = found
            now = self._clock()
            client = ctx.client
            key = id(client) ^ hash(scope.get("path") or "/" + index.paths[pos])
            if self.repeats(key, now, scope):
                return
            if now >= self._day_end:
                self._roll(now)
            if index is not self._by_pos_index:
                if index is not self._index:  # a request from before the swap: rare
                    self._count_old(index, pos, mirror, client.location.country)
                    return
                self._switch_index(index)
            self.count(pos, mirror, client.location.country, index.sizes[pos])
        except Exception:  # statistics must never break an answer already sent
            self.errors += 1

    def repeats(self, key: int, now: float, scope: Scope) -> bool:
        """Remember the (client, file) pair ``key``; True for a ranged request repeating it
        within the window (counted as deduplicated, not as a download)."""
        seen = self._seen
        repeat = False
        if has_range(scope["headers"]):  # only a ranged request can repeat
            last = seen.get(key)
            if last is None:
                last = self._seen_before.get(key)
            repeat = last is not None and now - last < self._window
        if len(seen) >= self._generation and key not in seen:
            self._seen_before, self._before_newest = seen, self._newest
            self._seen = seen = {}
        seen[key] = now
        self._newest = now
        if repeat:
            self.deduplicated += 1
        return repeat

    def count(self, pos: int, mirror: str | None, country: str | None, size: int) -> None:
        """One download of the file at ``pos`` of the snapshot being counted, today."""
        self.counted += 1
        self._by_pos[pos] += 1
        _add(self._mirrors, mirror, size)  # type: ignore[arg-type]
        _add(self._countries, country, size)  # type: ignore[arg-type]

    def _resolve(self, version: int) -> Index | None:
        """The index ``version`` belongs to: the current one, or the one it replaced. An
        index updated in place keeps its positions, so it covers every version from its
        full build to now."""
        current = self._holder.current
        if current is not self._index:
            self._previous, self._index = self._index, current
        for index in (self._index, self._previous):
            if index.base_version <= version <= index.version:
                return index
        return None

    def _switch_index(self, index: Index) -> None:
        """Positions change meaning with the snapshot: keep the old ones with theirs (the
        flusher turns them into paths, off the request that saw the new snapshot). One
        snapshot waits at most: a second switch before the flush settles the first here,
        rather than keep two replaced indexes (~400 MB each at 1M files) alive."""
        if self._by_pos:
            if self._positions:
                held = DayCounts(self._day, self._files, {}, {}, self._positions)
                held.settle_now()
                self._files, self._positions = held.files, []
            self._positions.append((self._by_pos_index, self._by_pos))
            self._by_pos = defaultdict(int)
        self._by_pos_index = index

    def _count_old(self, index: Index, pos: int, mirror: str | None, country: str | None) -> None:
        self.counted += 1
        size = index.sizes[pos]
        for tally, key in (
            (self._files, index.paths[pos]),
            (self._mirrors, mirror),
            (self._countries, country),
        ):
            _add(tally, key, size)  # type: ignore[arg-type]

    def _take_day(self) -> DayCounts | None:
        if self._by_pos:
            self._positions.append((self._by_pos_index, self._by_pos))
            self._by_pos = defaultdict(int)
        if not self._mirrors:
            return None
        day = DayCounts(
            self._day,
            self._files,
            {m or "": c for m, c in self._mirrors.items()},
            {c or "": n for c, n in self._countries.items()},
            self._positions,
        )
        self._files, self._mirrors, self._countries = {}, {}, {}
        self._positions = []
        return day

    def _roll(self, now: float) -> None:
        day = int(now // DAY_SECONDS)
        if day == self._day:  # the clock stepped back across midnight: keep counting
            self._day_end = (day + 1) * DAY_SECONDS
            return
        finished = self._take_day()
        if finished is not None:
            self._finished.append(finished)
        self._day = day
        self._day_end = (day + 1) * DAY_SECONDS

    def swap(self) -> list[DayCounts]:
        """Take everything counted so far, every file by path; counting goes on into fresh
        dicts."""
        days = self.take()
        for day in days:
            day.settle_now()
        return days

    def take(self) -> list[DayCounts]:
        """:meth:`swap`, leaving the file counts by position to :meth:`DayCounts.settle`."""
        out = self._finished
        self._finished = []
        today = self._take_day()
        if today is not None:
            out.append(today)
        return out

    def expire(self, now: float | None = None) -> int:
        """Forget each generation of (client, file) pairs whose pairs were all last seen at
        least a window ago; returns how many pairs went. (An old pair in a generation with
        newer ones stays until the generation goes: lookups check the time anyway, and the
        size bound holds either way.)"""
        now = self._clock() if now is None else now
        dropped = 0
        if self._seen_before and now - self._before_newest >= self._window:
            dropped += len(self._seen_before)
            self._seen_before = {}
        if self._seen and now - self._newest >= self._window:
            dropped += len(self._seen)
            self._seen = {}
        return dropped

    @property
    def remembered(self) -> int:
        return len(self._seen) + len(self._seen_before)


def _add(tally: Tally, key: str, size: int, n: int = 1) -> None:
    counts = tally.get(key)
    if counts is None:
        tally[key] = [n, n * size]
    else:
        counts[0] += n
        counts[1] += n * size


def has_range(headers: Sequence[tuple[bytes, bytes]]) -> bool:
    # A plain loop: any() over a generator costs twice as much on the hot path.
    for name, _ in headers:  # noqa: SIM110
        if name == b"range":
            return True
    return False
