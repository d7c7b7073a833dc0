"""The in-memory index the hot path reads: an immutable snapshot swapped whole on change.

Memory matters at 1,000,000 files x 200 mirrors, so per-file facts live in flat arrays
indexed by a file position, and each file's difference set is a small ``bytes`` of mirror
positions (``array('H')`` past 255 mirrors) rather than a Python set.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import gc
import ipaddress
import itertools
import logging
import random
import time
from array import array
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mirrorhub import countries
from mirrorhub.domain import (
    Client,
    Decision,
    IPAddress,
    Location,
    Mirror,
    MirrorState,
    Options,
    OriginFile,
    OriginReason,
)
from mirrorhub.load import LoadView
from mirrorhub.paths import glob_regex, parent_dirs, quote_path
from mirrorhub.selection import (
    KIND_MISSING,
    KIND_OUTDATED,
    Band,
    FastBand,
    FileFacts,
    MirrorSlot,
    Profile,
    band_walk,
    choose,
    fast_choose,
    make_slot,
    pick_in_band,
    rank_mirrors,
)

# (file id, path, size, mtime, sha256 hex or None, changed_at)
FileTuple = tuple[int, str, int, int, str | None, float]
PROFILE_CACHE_SIZE = 16384
_ORIGIN_REASONS = (None, OriginReason.TOO_SMALL, OriginReason.ORIGIN_ONLY)
RENDER_CACHE_SIZE = 65536
BAND_CACHE_SIZE = 262144
_MISS: Any = object()
VERSION_CHECK_TIMEOUT = 5.0  # seconds the index-version query may take before "database down"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexSource:
    """Everything the index is built from, as read from the database in one transaction."""

    version: int
    mirrors: Sequence[tuple[Mirror, MirrorState]]
    files: Sequence[FileTuple]
    diffs: Sequence[tuple[int, int]]  # (mirror id, file id) for each file a mirror lacks
    missing_kinds: Sequence[tuple[int, int]] = ()  # the (mirror id, file id) diffs of kind missing
    confirmations: Sequence[tuple[int, int, float]] = ()  # (mirror id, file id, checked at)


@dataclass(frozen=True)
class IndexConfig:
    band: Band = field(default_factory=Band)
    alternates: int = 4
    min_redirect_size: int = 0
    origin_only_patterns: tuple[str, ...] = ()
    # (path prefix, seconds), longest prefix first: how long after an origin change a mirror
    # with the previous version may still serve when no mirror has the new one yet.
    allow_outdated: tuple[tuple[str, float], ...] = ()


class NetworkTable:
    """Which mirrors' networks contain an address: one dict per (family, prefix length)."""

    def __init__(self, slots: Sequence[MirrorSlot]) -> None:
        tables: dict[tuple[int, int], dict[int, list[int]]] = {}
        for slot in slots:
            for net in slot.mirror.networks:
                key = (net.version, net.prefixlen)
                tables.setdefault(key, {}).setdefault(int(net.network_address), []).append(slot.idx)
        self._tables = [
            (version, 32 if version == 4 else 128, plen, {k: tuple(v) for k, v in t.items()})
            for (version, plen), t in sorted(tables.items())
        ]

    def members(self, address: IPAddress) -> frozenset[int]:
        if not self._tables:
            return frozenset()
        value = int(address)
        found: set[int] = set()
        for version, bits, plen, table in self._tables:
            if version != address.version:
                continue
            shift = bits - plen
            hit = table.get((value >> shift) << shift)
            if hit:
                found.update(hit)
        return frozenset(found)


class Index:
    """An immutable snapshot of origin files and mirrors, ready for selection."""

    def __init__(self, source: IndexSource, config: IndexConfig, built_at: float) -> None:
        self.version = source.version
        self.built_at = built_at
        self.config = config
        self.slots: tuple[MirrorSlot, ...] = tuple(
            make_slot(i, m, s, countries.centroid(m.country) if m.country else None)
            for i, (m, s) in enumerate(source.mirrors)
        )
        position_of_mirror = {slot.mirror.id: slot.idx for slot in self.slots}
        self.networks = NetworkTable(self.slots)
        self._origin_only = glob_regex(config.origin_only_patterns)

        n = len(source.files)
        self.paths: list[str] = [""] * n
        self.sizes = array("q", bytes(8 * n))
        self.mtimes = array("q", bytes(8 * n))
        self.changed = array("d", bytes(8 * n))
        self.sha256 = bytearray(32 * n)
        self.has_sha = bytearray(n)
        # Why each file always comes from the origin (index into _ORIGIN_REASONS; 0 = it
        # may be redirected): decided once here instead of on every request.
        self.origin_flags = bytearray(n)
        min_size = config.min_redirect_size
        self.positions: dict[str, int] = {}
        position_of_file: dict[int, int] = {}
        dirs: set[str] = set()
        for pos, (fid, path, size, mtime, sha, changed) in enumerate(source.files):
            self.paths[pos] = path
            self.sizes[pos] = size
            self.mtimes[pos] = mtime
            self.changed[pos] = changed
            if sha:
                self.sha256[32 * pos : 32 * pos + 32] = bytes.fromhex(sha)
                self.has_sha[pos] = 1
            if size < min_size:
                self.origin_flags[pos] = 1
            elif self._origin_only is not None and self._origin_only.match(
                path[path.rfind("/") + 1 :]
            ):
                self.origin_flags[pos] = 2
            self.positions[path] = pos
            position_of_file[fid] = pos
            slash = path.rfind("/")
            if slash > 0 and path[: slash + 1] not in dirs:
                dirs.update(parent_dirs(path))
        self.dirs = frozenset(dirs)

        wide = len(self.slots) > 255
        grouped: dict[int, list[int]] = {}
        for mirror_id, file_id in source.diffs:
            mpos = position_of_mirror.get(mirror_id)
            fpos = position_of_file.get(file_id)
            if mpos is not None and fpos is not None:
                grouped.setdefault(fpos, []).append(mpos)
        missing = {
            (position_of_mirror.get(m), position_of_file.get(f)) for m, f in source.missing_kinds
        }
        self.bad: list[Sequence[int] | None] = [None] * n
        self.kinds: list[bytes | None] = [None] * n
        for fpos, mpositions in grouped.items():
            mpositions.sort()
            self.bad[fpos] = array("H", mpositions) if wide else bytes(mpositions)
            self.kinds[fpos] = bytes(
                KIND_MISSING if (m, fpos) in missing else KIND_OUTDATED for m in mpositions
            )
        self.confirmations: dict[int, dict[int, float]] = {}
        for mirror_id, file_id, checked in source.confirmations:
            mpos = position_of_mirror.get(mirror_id)
            fpos = position_of_file.get(file_id)
            if mpos is not None and fpos is not None:
                self.confirmations.setdefault(fpos, {})[mpos] = checked
        self._profiles: dict[tuple[object, ...], Profile] = {}
        self._rendered: dict[int, tuple[bytes, bytes | None]] = {}
        self._bands: dict[tuple[int, int], FastBand | None] = {}
        self._serials = itertools.count(1)
        self._asns = frozenset(s.mirror.asn for s in self.slots if s.mirror.asn is not None)

    def __len__(self) -> int:
        return len(self.paths)

    def lookup(self, path: str) -> int | None:
        return self.positions.get(path)

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self.dirs or (path + "/") in self.dirs

    def origin_file(self, pos: int) -> OriginFile:
        sha = self.sha256[32 * pos : 32 * pos + 32].hex() if self.has_sha[pos] else None
        return OriginFile(
            self.paths[pos], self.sizes[pos], self.mtimes[pos], sha, self.changed[pos]
        )

    def sha256_digest(self, pos: int) -> bytes | None:
        return bytes(self.sha256[32 * pos : 32 * pos + 32]) if self.has_sha[pos] else None

    def profile(self, client: Client, options: Options) -> Profile:
        """The client's ranking, shared by all clients that rank the same (cached)."""
        members = self.networks.members(client.address)
        loc = _coarse(client.location, self._asns)
        effective = _override_location(options.country)
        key = (members, loc, options, effective)
        profile = self._profiles.get(key)
        if profile is None:
            if len(self._profiles) >= PROFILE_CACHE_SIZE:
                del self._profiles[next(iter(self._profiles))]  # oldest first
            coarse = Client(client.address, loc)
            profile = rank_mirrors(self.slots, coarse, options, members, effective)
            profile = dataclasses.replace(profile, serial=next(self._serials))
            self._profiles[key] = profile
        return profile

    def rendered(self, pos: int) -> tuple[bytes, bytes | None]:
        """The file's %-encoded path and its ``Digest`` header value (cached, bounded)."""
        hit = self._rendered.get(pos)
        if hit is None:
            if len(self._rendered) >= RENDER_CACHE_SIZE:
                del self._rendered[next(iter(self._rendered))]
            digest = self.sha256_digest(pos)
            hit = (
                quote_path(self.paths[pos]).encode("ascii"),
                b"SHA-256=" + base64.b64encode(digest) if digest is not None else None,
            )
            self._rendered[pos] = hit
        return hit

    def fast_pick(
        self,
        pos: int,
        profile: Profile,
        rng: random.Random,
        now: float,
        load: LoadView | None = None,
    ) -> tuple[list[int], bool] | None:
        """The hot path's choice for the file at ``pos``: positions in ``profile.ranked``
        (chosen first, then alternates) and whether it is an allow_outdated pick. Agrees with
        :meth:`decide` (see tests/test_fast_path.py).

        The band (everything but the random draw) is cached per (profile, file): popular
        files asked for from the same region cost a dict lookup and one draw.
        """
        key = (profile.serial, pos)
        found = self._bands.get(key, _MISS)
        if found is _MISS:
            found = band_walk(
                profile,
                self.paths[pos],
                self.changed[pos],
                self.bad[pos],
                self.kinds[pos],
                self.confirmations.get(pos),
                self.config.band,
                self.config.alternates,
                False,
            )
            if len(self._bands) >= BAND_CACHE_SIZE:
                del self._bands[next(iter(self._bands))]  # oldest first
            self._bands[key] = found
        if found is not None:
            return pick_in_band(found, rng, self.config.alternates, load, self.sizes[pos]), False
        if self.config.allow_outdated and self.tolerates(pos, now):
            return fast_choose(
                profile,
                self.paths[pos],
                self.changed[pos],
                self.bad[pos],
                self.kinds[pos],
                self.confirmations.get(pos),
                rng,
                self.config.band,
                self.config.alternates,
                True,
                load,
                self.sizes[pos],
            )
        return None

    def origin_reason(self, pos: int) -> OriginReason | None:
        """Why this file is always served from the origin, or None."""
        return _ORIGIN_REASONS[self.origin_flags[pos]]

    def tolerance(self, path: str) -> float:
        """Seconds an outdated copy may still serve ``path`` (longest allow_outdated prefix)."""
        for prefix, seconds in self.config.allow_outdated:
            if path.startswith(prefix):
                return seconds
        return 0.0

    def tolerates(self, pos: int, now: float) -> bool:
        """Whether an outdated copy may still serve the file at ``pos`` at ``now``."""
        window = self.tolerance(self.paths[pos])
        return window > 0 and now - self.changed[pos] <= window

    def decide(
        self,
        pos: int,
        client: Client,
        options: Options,
        rng: random.Random,
        *,
        full: bool,
        now: float | None = None,
        load: LoadView | None = None,
    ) -> Decision:
        """The selection Decision for the file at ``pos``; the same for every view.

        ``now`` is only needed for allow_outdated windows (time since the origin's change).
        """
        file = self.origin_file(pos)
        origin_reason = self.origin_reason(pos)
        if origin_reason is not None and not full:
            return Decision(file.path, file, client, options, None, (), (), origin_reason)
        facts = FileFacts(file, self.bad[pos], self.kinds[pos])
        decision = choose(
            self.profile(client, options),
            facts,
            quote_path(file.path),
            rng,
            band=self.config.band,
            alternates=self.config.alternates,
            full=full,
            client=client,
            options=options,
            confirmations=self.confirmations.get(pos),
            tolerate_outdated=now is not None and self.tolerates(pos, now),
            load=load,
        )
        if origin_reason is not None:
            return Decision(
                file.path, file, client, options, None, decision.ranked, decision.excluded,
                origin_reason,
            )  # fmt: skip
        if decision.chosen is None:
            return Decision(
                file.path, file, client, options, None, (), decision.excluded,
                OriginReason.NO_FRESH_MIRROR,
            )  # fmt: skip
        return decision


def _coarse(loc: Location, asns: frozenset[int]) -> Location:
    """What of a location selection can tell apart, so that many clients share a profile.

    Coordinates snap to a 0.5 degree grid (at most ~40 km off); an AS that no mirror is in
    cannot change a ranking and is dropped.
    """
    asn = loc.asn if loc.asn in asns else None
    if loc.latitude is None or loc.longitude is None:
        return loc if asn == loc.asn else Location(loc.country, loc.continent, None, None, asn)
    lat = round(loc.latitude * 2) / 2
    lon = round(loc.longitude * 2) / 2
    return Location(loc.country, loc.continent, lat, lon, asn)


def _override_location(country: str | None) -> Location | None:
    if country is None:
        return None
    centroid = countries.centroid(country)
    lat, lon = centroid if centroid else (None, None)
    return Location(country, countries.continent_of(country), lat, lon, None)


def build_index(
    source: IndexSource, config: IndexConfig, clock: Callable[[], float] = time.time
) -> Index:
    # A build allocates millions of small objects that all stay alive; letting the cyclic
    # collector scan them again and again makes the build superlinear, so it waits.
    enabled = gc.isenabled()
    gc.disable()
    try:
        return Index(source, config, clock())
    finally:
        if enabled:
            gc.enable()


def empty_index(config: IndexConfig, clock: Callable[[], float] = time.time) -> Index:
    return build_index(IndexSource(version=-1, mirrors=(), files=(), diffs=()), config, clock)


def parse_address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


class IndexHolder:
    """Holds the current snapshot; the refresher swaps in a new one whole."""

    def __init__(self, initial: Index) -> None:
        self.current = initial
        self.last_check: float | None = None  # last time the database answered
        self.last_error: str | None = None  # why the last check failed, if it did

    @property
    def database_ok(self) -> bool:
        return self.last_error is None


async def refresh_once(
    holder: IndexHolder,
    load_version: Callable[[], Awaitable[int]],
    load_source: Callable[[], Awaitable[IndexSource]],
    config: IndexConfig,
    clock: Callable[[], float] = time.time,
) -> bool:
    """Rebuild the index when the database's version moved; True when it swapped.

    A database error keeps the last good snapshot and is remembered for the status page.
    """
    try:
        # A database behind a dead link (no RST) would hang the check for the driver's
        # connect timeout (60 s with asyncpg) while /-/health still said "ok".
        version = await asyncio.wait_for(load_version(), VERSION_CHECK_TIMEOUT)
        if version == holder.current.version:
            holder.last_check, holder.last_error = clock(), None
            return False
        source = await load_source()
    except Exception as exc:  # any failure of the database must leave the snapshot alone
        holder.last_error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        log.warning("index refresh failed, keeping version %s: %s", holder.current.version, exc)
        return False
    # Building a large index takes seconds; a thread keeps the event loop answering.
    holder.current = await asyncio.to_thread(build_index, source, config, clock)
    holder.last_check, holder.last_error = clock(), None
    return True


async def refresh_loop(
    holder: IndexHolder,
    load_version: Callable[[], Awaitable[int]],
    load_source: Callable[[], Awaitable[IndexSource]],
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
        await refresh_once(holder, load_version, load_source, config, clock)
        if wake is None:
            await asyncio.sleep(interval)
            continue
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), interval)
