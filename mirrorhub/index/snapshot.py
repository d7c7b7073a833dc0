"""The in-memory index the hot path reads.

Memory matters at 1,000,000 files x 200 mirrors, so per-file facts live in flat arrays
indexed by a file position, and each file's difference set is a small ``bytes`` of mirror
positions (``array('H')`` past position 255) rather than a Python set.

A full build fills a new Index (:mod:`mirrorhub.index.build`); later changes are written
into the live one file by file (:mod:`mirrorhub.index.delta`). A position means the same
file for the life of the object (a removed file leaves a hole), so caches and counters
keyed by position stay valid across changes; only a full rebuild makes a new object.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import random
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Sequence

from mirrorhub import countries
from mirrorhub.domain import Client, Decision, Location, Options, OriginFile, OriginReason
from mirrorhub.fifo import FifoCache, SpreadFifo
from mirrorhub.index.networks import NetworkTable
from mirrorhub.index.source import FileTuple, IndexConfig, MirrorPair
from mirrorhub.load import LoadView
from mirrorhub.paths import name_matcher, parent_dirs, quote_path
from mirrorhub.selection.decision import choose
from mirrorhub.selection.fast_path import FastBand, band_walk, fast_choose, pick_in_band
from mirrorhub.selection.ranking import FileFacts, Profile, make_slot, rank_mirrors

# Caches of what selection derives; rankings and bands are bounded by the config (settings
# ranking_cache_size, band_cache_size): a ranking is ~23 KB at 200 mirrors (a miss costs
# ~1 ms), a band ~1 KB, sharing its tuples with others of its shape (a miss: one walk, ~10 us).
_ORIGIN_REASONS = (None, OriginReason.TOO_SMALL, OriginReason.ORIGIN_ONLY)
RENDER_CACHE_SIZE = 65536
_NO_SHA = "0" * 64
_SHARED_KINDS_LEN = 8  # at most 2 ** 9 - 2 kept values


class NeedsRebuild(Exception):
    """A change the live index cannot take in place (a mirror removed, a file id reused)."""


class Index:
    """Origin files and mirrors, ready for selection."""

    def __init__(
        self, config: IndexConfig, mirrors: Sequence[MirrorPair], version: int, built_at: float
    ) -> None:
        self.version = version
        self.base_version = version  # of the full build: later versions were applied in place
        self.built_at = built_at
        self.config = config
        self._origin_only = name_matcher(config.origin_only_patterns)
        self.paths: list[str] = []  # "" marks the hole a removed file leaves
        self.file_ids = array("q")  # ascending: a file id's position by bisection
        self.sizes = array("q")
        self.mtimes = array("q")
        self.changed = array("d")
        self.sha256 = bytearray()
        self.has_sha = bytearray()
        # Why each file always comes from the origin (index into _ORIGIN_REASONS; 0 = it
        # may be redirected): decided once per file instead of on every request.
        self.origin_flags = bytearray()
        self.stamps = array("I")  # bumped when a file's facts change: part of cache keys
        self.positions: dict[str, int] = {}
        self._dir_files: dict[str, int] = {}  # "a/b/" -> live files below it
        self.bad: list[Sequence[int] | None] = []
        self.kinds: list[bytes | None] = []
        # Kinds lists are few by value (2 ** n for n mirrors lacking a file), so files share
        # one object per value (~12 MB less at 1M files, where positions are shared per set).
        self._kinds_kept: dict[bytes, bytes] = {}
        self.confirmations: dict[int, dict[int, float]] = {}
        self.live = 0
        # Values are bytes: the dict is then never tracked by the garbage collector (a tuple
        # per entry was one more object for each young collection to walk).
        self._rendered: FifoCache[int, bytes] = FifoCache(RENDER_CACHE_SIZE)
        # Made again on every rendered answer, the value cost ~300 instructions per
        # redirect, ~2,000 with every mirror held back (bench.instructions). Kept apart from
        # the path: one value for both, cut apart on use, was ~8 MB less when full at 1M
        # files but ~700 instructions more per held-back redirect (two slices per answer).
        self._digests: FifoCache[int, bytes] = FifoCache(RENDER_CACHE_SIZE)
        # Kept on the profiles (Profile.bands), under one bound.
        self._bands: SpreadFifo[int, FastBand | int] = SpreadFifo(config.band_cache)
        # The dispatcher that keeps its rendered answers on this index's bands (FastBand.answers).
        self.answers_owner: object | None = None
        self._serials = itertools.count(1)
        self._mirrors: tuple[MirrorPair, ...] | None = None
        self._mirror_ids: list[int] = []  # by position
        self._mirror_pos: dict[int, int] = {}
        self.set_mirrors(mirrors)

    # --- mirrors ---

    def reserve_mirrors(self, mirrors: Sequence[MirrorPair]) -> None:
        """Give mirrors new since the last call a position (difference sets name them) without
        making them selectable yet: that waits for :meth:`set_mirrors`.

        Raises NeedsRebuild unless the known mirrors keep their positions (new ones come
        last, as a full build ordered by id would put them).
        """
        ids = [m.id for m, _ in mirrors]
        known = self._mirror_ids
        if ids[: len(known)] != known:
            raise NeedsRebuild("a mirror was removed")
        for mirror_id in ids[len(known) :]:
            self._mirror_pos[mirror_id] = len(known)
            known.append(mirror_id)

    def set_mirrors(self, mirrors: Sequence[MirrorPair]) -> bool:
        """Take the current mirrors; False when nothing changed (caches stay warm)."""
        mirrors = tuple(mirrors)
        if mirrors == self._mirrors:
            return False
        self.reserve_mirrors(mirrors)
        self._mirrors = mirrors
        self.slots = tuple(
            make_slot(i, m, s, countries.centroid(m.country) if m.country else None)
            for i, (m, s) in enumerate(mirrors)
        )
        self.networks = NetworkTable(self.slots)
        self._slot_of = {s.mirror.name: s.idx for s in self.slots}  # shared by the profiles
        self._asns = frozenset(s.mirror.asn for s in self.slots if s.mirror.asn is not None)
        # Rankings read every mirror fact: a new set of mirrors starts a new cache.
        self._profiles: FifoCache[tuple[object, ...], Profile] = FifoCache(
            self.config.ranking_cache
        )
        return True

    # --- files ---

    def append_files(self, rows: Sequence[FileTuple]) -> None:
        """Add files at new positions; ids must ascend past every id already here."""
        if not rows:
            return
        ids, paths, sizes, mtimes, shas, changed = zip(*rows, strict=True)  # columns, in C
        last = self.file_ids[-1] if self.file_ids else -1
        if ids[0] <= last or any(a >= b for a, b in itertools.pairwise(ids)):
            raise NeedsRebuild("file ids out of order")
        start = len(self.paths)
        self.file_ids.extend(ids)
        self.paths.extend(paths)
        self.sizes.extend(sizes)
        self.mtimes.extend(mtimes)
        self.changed.extend(changed)
        self.sha256 += bytes.fromhex("".join([s or _NO_SHA for s in shas]))
        self.has_sha += bytes([1 if s else 0 for s in shas])
        self.origin_flags += self._origin_flags(paths, sizes)
        self.stamps.extend([0] * len(rows))
        self.bad.extend([None] * len(rows))
        self.kinds.extend([None] * len(rows))
        self.positions.update(zip(paths, range(start, start + len(rows)), strict=True))
        for parent, count in Counter([p[: p.rfind("/") + 1] for p in paths]).items():
            self._count_dirs(parent, count)
        self.live += len(rows)

    def put_file(self, row: FileTuple) -> int:
        """Add or update one file; its position."""
        fid, path, size, mtime, sha, changed = row
        pos = self.position_of_id(fid)
        if pos is None:
            self.append_files([row])
            return len(self.paths) - 1
        if self.paths[pos] != path:
            raise NeedsRebuild("a file id changed its path")
        self.sizes[pos] = size
        self.mtimes[pos] = mtime
        self.changed[pos] = changed
        self.sha256[32 * pos : 32 * pos + 32] = bytes.fromhex(sha or _NO_SHA)
        self.has_sha[pos] = 1 if sha else 0
        self.origin_flags[pos] = self._origin_flags((path,), (size,))[0]
        self.touch(pos)
        return pos

    def drop_file(self, file_id: int) -> None:
        """Remove a file, leaving a hole at its position."""
        pos = self.position_of_id(file_id)
        if pos is None:
            return
        path = self.paths[pos]
        del self.positions[path]
        self._count_dirs(path, -1)
        self.paths[pos] = ""
        self.has_sha[pos] = 0
        self.bad[pos] = self.kinds[pos] = None
        self.confirmations.pop(pos, None)
        self.touch(pos)
        self.live -= 1

    def put_diffs(self, pos: int, mirror_ids: Sequence[int], kinds: bytes) -> None:
        """The mirrors that lack the file at ``pos`` (all of them: replaces what was there)."""
        where = self._mirror_pos
        try:
            found = [where[m] for m in mirror_ids]
        except KeyError:  # a mirror newer than this index's list: it is not selectable yet
            pairs = [(where[m], k) for m, k in zip(mirror_ids, kinds, strict=True) if m in where]
            found, kinds = [p for p, _ in pairs], bytes(k for _, k in pairs)
        if not found:
            self.bad[pos] = self.kinds[pos] = None
            return
        self.bad[pos] = bytes(found) if max(found) < 256 else array("H", found)
        self.kinds[pos] = self.shared_kinds(kinds)

    def put_diff_positions(self, pos: int, positions: Sequence[int], kinds: bytes) -> None:
        """Like :meth:`put_diffs` with mirror positions instead of ids (bulk loading, once
        per file of a set: ``kinds`` as :meth:`shared_kinds` gave them)."""
        self.bad[pos] = positions or None
        self.kinds[pos] = kinds or None

    def shared_kinds(self, kinds: bytes) -> bytes:
        """The one object kept for this value of a kinds list (short ones; a long one is
        rare, and almost every value of it distinct)."""
        if len(kinds) > _SHARED_KINDS_LEN:
            return kinds
        return self._kinds_kept.setdefault(kinds, kinds)

    def mirror_positions(self) -> dict[int, int]:
        """Mirror id -> position (a copy)."""
        return dict(self._mirror_pos)

    def put_confirmations(self, pos: int, confirmed: dict[int, float]) -> None:
        """Re-checks that saw the current version on mirrors (by mirror id); replaces."""
        where = self._mirror_pos
        by_pos = {where[m]: at for m, at in confirmed.items() if m in where}
        if by_pos:
            self.confirmations[pos] = by_pos
        else:
            self.confirmations.pop(pos, None)

    def position_of_id(self, file_id: int) -> int | None:
        ids = self.file_ids
        pos = bisect_left(ids, file_id)
        if pos < len(ids) and ids[pos] == file_id and self.paths[pos]:
            return pos
        return None

    def touch(self, pos: int) -> None:
        """Forget what was cached about the file at ``pos``."""
        self.stamps[pos] = (self.stamps[pos] + 1) & 0xFFFFFFFF
        self._rendered.pop(pos)
        self._digests.pop(pos)

    def _origin_flags(self, paths: Sequence[str], sizes: Sequence[int]) -> bytes:
        """Each file's index into _ORIGIN_REASONS: 1 too small, 2 an origin-only name."""
        min_size, only = self.config.min_redirect_size, self._origin_only
        if only is None:
            return bytes([1 if n < min_size else 0 for n in sizes])
        return bytes(
            [
                1 if n < min_size else 2 if only(p[p.rfind("/") + 1 :]) else 0
                for p, n in zip(paths, sizes, strict=True)
            ]
        )

    def _count_dirs(self, path: str, delta: int) -> None:
        """Count ``delta`` files into every directory above ``path`` ("a/b/c" or "a/b/")."""
        counts = self._dir_files
        for parent in parent_dirs(path):
            left = counts.get(parent, 0) + delta
            if left > 0:
                counts[parent] = left
            else:
                counts.pop(parent, None)

    @property
    def dirs(self) -> Iterable[str]:
        return self._dir_files.keys()

    def __len__(self) -> int:
        return self.live

    def lookup(self, path: str) -> int | None:
        return self.positions.get(path)

    def is_dir(self, path: str) -> bool:
        return path == "" or path in self._dir_files or (path + "/") in self._dir_files

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
            coarse = Client(client.address, loc)
            profile = rank_mirrors(self.slots, coarse, options, members, effective, self._slot_of)
            profile = dataclasses.replace(profile, serial=next(self._serials))
            self._profiles.put(key, profile)
        return profile

    def rendered(self, pos: int) -> bytes:
        """The file's %-encoded path (cached, bounded)."""
        hit = self._rendered.get(pos)
        if hit is None:
            hit = quote_path(self.paths[pos]).encode("ascii")
            self._rendered.put(pos, hit)
        return hit

    def digest_header(self, pos: int) -> bytes | None:
        """The file's ``Digest`` header value, if the origin gave its SHA-256."""
        hit = self._digests.get(pos)
        if hit is None:  # b"": the origin gave none
            digest = self.sha256_digest(pos)
            hit = b"" if digest is None else b"SHA-256=" + base64.b64encode(digest)
            self._digests.put(pos, hit)
        return hit or None

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
        found = self.fast_band(pos, profile)
        if found is not None:
            alternates, size = self.config.alternates, self.sizes[pos]
            return pick_in_band(found, profile, rng, alternates, load, size), False
        if self.config.allow_outdated and self.tolerates(pos, now):
            return fast_choose(
                profile,
                *self._facts(pos),
                rng,
                self.config.band,
                self.config.alternates,
                True,
                load,
                self.sizes[pos],
            )
        return None

    def fast_band(self, pos: int, profile: Profile) -> FastBand | None:
        """The band of current copies for (profile, file), cached; None when no mirror in
        the ranking holds a current copy."""
        stamp = self.stamps[pos]
        hit = profile.bands.get(pos)
        if hit is not None:
            if hit.__class__ is not FastBand:  # the stamp of a file with no band
                if hit == stamp:
                    return None
            elif hit.stamp == stamp:
                return hit
        found = band_walk(
            profile, *self._facts(pos), self.config.band, self.config.alternates, False, stamp
        )
        # A stale entry is replaced. No (stamp, band) pair per entry: one object fewer for
        # the garbage collector to walk per cached band.
        self._bands.put(profile.bands, pos, stamp if found is None else found)
        return found

    def _facts(
        self, pos: int
    ) -> tuple[str, float, Sequence[int] | None, bytes | None, dict[int, float] | None]:
        """What the fast path's walks read of the file at ``pos``, in their argument order."""
        return (
            self.paths[pos],
            self.changed[pos],
            self.bad[pos],
            self.kinds[pos],
            self.confirmations.get(pos),
        )

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
