"""What selection knows before looking at a file: the ranking of mirrors for a client.

:func:`rank_mirrors` gives every mirror either an :class:`~mirrorhub.domain.Exclusion` that
holds for any file (disabled, down, a restriction, ...) or a place in the ranking by (tier,
distance); its result, a :class:`Profile`, is cached per client profile by the index.
:func:`file_reason` is the per-file test (scope, difference sets, last scan) that
:func:`~mirrorhub.selection.decision.choose` applies while it walks the ranking (the fast path
applies the same rules to the profile's tuples); :class:`Band` and the spill constants say
how far down the ranking a pick may reach.
"""

from __future__ import annotations

import functools
from array import array
from collections import OrderedDict
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mirrorhub.domain import (
    Client,
    Exclusion,
    Health,
    Location,
    Mirror,
    MirrorState,
    Options,
    OriginFile,
    Reason,
    Scheme,
    Tier,
)
from mirrorhub.geo import distance_km

if TYPE_CHECKING:
    from mirrorhub.selection.fast_path import CleanWalk, FastBand

# Order in which per-file reasons are reported by kind code stored in the index.
KIND_MISSING = 0
KIND_OUTDATED = 1
SPILL_CANDIDATES = 8  # fresh mirrors after the band that may take traffic a full band sheds
# Fresh mirrors past the spill candidates (nearest first, with room for the file) that may
# take a file for which neither the band nor any spill candidate has room left.
FURTHER_CANDIDATES = 8
# Band shapes a ranking keeps for its bands to share (Profile.band_shapes): the first ones
# made, which are mostly the shape of files every near mirror holds. Few, since a ranking
# is kept for as long as any of its bands, and each shape is ~1.3 KB.
BAND_SHAPES_KEPT = 2


@dataclass(frozen=True, slots=True)
class Band:
    """Mirrors within ``factor`` x closest + ``km`` of the closest share the traffic."""

    factor: float = 1.5
    km: float = 500.0

    def limit(self, closest: float) -> float:
        return closest * self.factor + self.km


@dataclass(frozen=True, slots=True)
class MirrorSlot:
    """A mirror as the index holds it: facts precomputed once per index build."""

    idx: int  # position in the index; the key used by per-file difference sets
    mirror: Mirror
    state: MirrorState
    latitude: float | None  # own coordinates, else its country's centroid
    longitude: float | None
    static_reason: Reason | None  # excluded for every path and client (disabled, down...)


@dataclass(frozen=True, slots=True)
class Ranked:
    slot: MirrorSlot
    tier: Tier
    distance: float | None
    base: str  # base URL for this request's scheme


@dataclass(slots=True)
class RoomMemo:
    """What the fast path's ``_held_back_pick`` last found for a profile: the positions in its
    ranking of the mirrors in ``below`` (a view's ``below_capacity``) when that had ``size``
    members. Holding the set keeps its id from being reused; it only shrinks, so its size
    tells whether it changed."""

    below: set[str] | None = None
    size: int = 0
    positions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True, weakref_slot=True)  # client contexts refer weakly
class Profile:
    """What selection knows about a client before looking at a file.

    It keeps the ranked mirrors' facts as parallel tuples, so the hot path
    (:mod:`mirrorhub.selection.fast_path`) walks plain values instead of objects; the
    :class:`Ranked` objects the full decision walks are made from them when asked for (a
    cached profile would otherwise hold 200 of them: ~16 KB of its ~38 KB).
    """

    # By slot index; the index's own tuple, shared by its profiles.
    slots: Sequence[MirrorSlot] | Mapping[int, MirrorSlot] = field(compare=False, repr=False)
    excluded: tuple[Exclusion, ...]
    idx: tuple[int, ...] = ()
    tiers: tuple[int, ...] = ()
    distances: tuple[float | None, ...] = ()
    scopes: tuple[tuple[str, ...], ...] = ()
    last_scans: tuple[float, ...] = ()
    capacities: tuple[float, ...] = ()  # Mbit/s; float objects shared with the bands
    bases: tuple[bytes, ...] = ()  # base URL for this request's scheme, ASCII
    names: tuple[bytes, ...] = ()
    geo_suffixes: tuple[bytes, ...] = ()  # b"; geo=de" for Link headers, or b""
    link_prefixes: tuple[bytes, ...] = ()  # b"<" + base, for Link headers
    mirror_names: tuple[str, ...] = ()
    serial: int = 0  # names this profile in the index's per-(profile, file) answer cache
    # By slot index: 1 + the mirror's position in ``ranked``, 0 when it is not ranked. With
    # ``slot_of`` (mirror name -> slot index) the fast path finds where the mirrors that
    # still have room stand in this ranking without walking it. Both follow from ``ranked``.
    rank_of: Sequence[int] = field(default=(), compare=False)
    slot_of: Mapping[str, int] = field(default_factory=dict, compare=False)
    room_memo: RoomMemo = field(default_factory=lambda: RoomMemo(), compare=False, repr=False)
    # The index's cached bands for this ranking: file position -> its band (which holds
    # the file's stamp), or the stamp alone when no mirror holds a current copy; under the
    # index's one bound (Index.fast_band). An int key, not a (profile, file, stamp) tuple:
    # hashing and comparing that cost ~800 instructions per redirect.
    bands: dict[int, FastBand | int] = field(default_factory=dict, compare=False, repr=False)
    # Up to BAND_SHAPES_KEPT bands' tuples, by (alternates, member count, members, others):
    # the bands with those positions share them (fast_path.band_walk).
    band_shapes: dict[tuple[int, ...], FastBand] = field(
        default_factory=dict, compare=False, repr=False
    )
    # The walk of a file every mirror it visits holds current, by alternates
    # (fast_path.CleanWalk): most files take its band without a walk of their own.
    clean_walks: dict[int, CleanWalk] = field(default_factory=dict, compare=False, repr=False)

    @property
    def ranked(self) -> tuple[Ranked, ...]:
        """The ranking, best first: made when first asked for, and kept for the
        ``RANKED_KEPT`` profiles asked most recently."""
        kept = _ranked_kept.get(id(self))
        if kept is not None:
            _ranked_kept.move_to_end(id(self))
            return kept[1]
        slots, tiers = self.slots, _TIERS
        ranked = tuple(
            Ranked(slots[i], tiers[t], d, b.decode("ascii"))
            for i, t, d, b in zip(self.idx, self.tiers, self.distances, self.bases, strict=True)
        )
        _ranked_kept[id(self)] = (self, ranked)  # holding the profile keeps its id unique
        if len(_ranked_kept) > RANKED_KEPT:
            _ranked_kept.popitem(last=False)
        return ranked


# The full decision (views, Metalink, files no mirror is fresh for) walks Ranked objects;
# the hot path never does. Kept for the profiles that last needed them (~16 KB each at 200
# mirrors) instead of in every cached profile. Only the event loop's thread uses it.
RANKED_KEPT = 256
_ranked_kept: OrderedDict[int, tuple[Profile, tuple[Ranked, ...]]] = OrderedDict()
_TIERS = tuple(Tier)  # by value: Tier(t) is a slow call


def make_profile(
    ranked: Sequence[Ranked],
    excluded: Sequence[Exclusion],
    slot_of: Mapping[str, int] | None = None,
    slots: Sequence[MirrorSlot] | Mapping[int, MirrorSlot] | None = None,
) -> Profile:
    """``slot_of`` maps every slot's mirror name to its index and ``slots`` holds the slots
    by index (the index shares both between its profiles); by default they are made from
    ``ranked``."""
    if not isinstance(slots, Sequence) or any(s.idx != i for i, s in enumerate(slots)):
        slots = {r.slot.idx: r.slot for r in ranked}
    rank_of = array("H", bytes(2 * (1 + max((r.slot.idx for r in ranked), default=-1))))
    for pos, r in enumerate(ranked):
        rank_of[r.slot.idx] = pos + 1
    if slot_of is None:
        slot_of = {r.slot.mirror.name: r.slot.idx for r in ranked}
    return Profile(
        slots,
        tuple(excluded),
        tuple(r.slot.idx for r in ranked),
        tuple(int(r.tier) for r in ranked),
        tuple(r.distance for r in ranked),
        tuple(r.slot.mirror.scope for r in ranked),
        tuple(r.slot.state.last_good_scan or 0.0 for r in ranked),
        tuple(_capacity(r.slot.mirror.capacity) for r in ranked),
        tuple(_base_bytes(r.base) for r in ranked),
        tuple(_name_bytes(r.slot.mirror.name) for r in ranked),
        tuple(_geo_suffix(r.slot.mirror.country) for r in ranked),
        tuple(_link_prefix(r.base) for r in ranked),
        tuple(r.slot.mirror.name for r in ranked),
        rank_of=rank_of,
        slot_of=slot_of,
    )


# The per-mirror values of a ranking are the same in every ranking: made once and shared,
# the byte strings alone were ~50 KB of each cached ranking's ~84 KB at 200 mirrors.
# Bounded, since mirrors' URLs, names and capacities change over a process's life.
@functools.lru_cache(maxsize=4096)
def _capacity(mbps: int) -> float:
    return float(mbps)  # float(x) of a float is x: each band's capacity tuples share these


@functools.lru_cache(maxsize=4096)
def _base_bytes(base: str) -> bytes:
    return base.encode("ascii")


@functools.lru_cache(maxsize=4096)
def _link_prefix(base: str) -> bytes:
    return b"<" + base.encode("ascii")


@functools.lru_cache(maxsize=4096)
def _name_bytes(name: str) -> bytes:
    return name.encode("ascii", "replace")


@functools.lru_cache(maxsize=512)
def _geo_suffix(country: str | None) -> bytes:
    return f"; geo={country.lower()}".encode() if country else b""


@dataclass(frozen=True, slots=True)
class FileFacts:
    """One origin file and which mirrors lack it (indices and kinds, parallel sequences)."""

    file: OriginFile
    bad: Sequence[int] | None  # indices of mirrors that hold a different version or none
    kinds: Sequence[int] | None = None  # KIND_* for each entry of ``bad``


def _state_reason(mirror: Mirror, state: MirrorState) -> Reason | None:
    if not mirror.enabled:
        return Reason.DISABLED
    if state.health is Health.DOWN:
        return Reason.DOWN
    if state.lagging:
        return Reason.LAGGING
    if state.scan_failed:
        return Reason.SCAN_FAILED
    if state.last_good_scan is None:
        return Reason.NOT_SCANNED
    return None


def make_slot(
    idx: int, mirror: Mirror, state: MirrorState, centroid: tuple[float, float] | None
) -> MirrorSlot:
    lat, lon = mirror.latitude, mirror.longitude
    if (lat is None or lon is None) and centroid is not None:
        lat, lon = centroid
    return MirrorSlot(idx, mirror, state, lat, lon, _state_reason(mirror, state))


def _restriction_reason(
    mirror: Mirror, real: Location, in_own_network: bool, options: Options
) -> Reason | None:
    r = mirror.restrictions
    if real.country is not None and real.country in r.excluded_countries:
        return Reason.COUNTRY_EXCLUDED
    if r.only_own_networks and not in_own_network:
        return Reason.NOT_OWN_NETWORK
    if r.only_own_asn and (real.asn is None or real.asn != mirror.asn):
        return Reason.NOT_OWN_ASN
    if r.only_own_country and (real.country is None or real.country != mirror.country):
        return Reason.NOT_OWN_COUNTRY
    if r.only_own_continent and (real.continent is None or real.continent != mirror.continent):
        return Reason.NOT_OWN_CONTINENT
    if mirror.country is not None and mirror.country in options.avoid:
        return Reason.AVOIDED
    return None


def _tier(mirror: Mirror, loc: Location, in_own_network: bool) -> Tier:
    if in_own_network:
        return Tier.NETWORK
    if loc.asn is not None and loc.asn == mirror.asn:
        return Tier.ASN
    if loc.country is not None and loc.country == mirror.country:
        return Tier.COUNTRY
    if loc.continent is not None and loc.continent == mirror.continent:
        return Tier.CONTINENT
    return Tier.WORLD


def rank_mirrors(
    slots: Sequence[MirrorSlot],
    client: Client,
    options: Options,
    network_members: Container[int],
    effective: Location | None = None,
    slot_of: Mapping[str, int] | None = None,
) -> Profile:
    """Classify every mirror for this client, independent of any file.

    ``network_members`` holds the indices of mirrors whose networks contain the client's
    address. ``effective`` is the location used for tiers and distance (the ``?country=``
    override); restrictions always use the client's real location. ``slot_of``: see
    :func:`make_profile`.
    """
    real = client.location
    loc = real if effective is None else effective
    overridden = effective is not None
    needs_https = options.needs_https
    ranked: list[tuple[tuple[int, float, int], Ranked]] = []
    excluded: list[Exclusion] = []
    for slot in slots:
        mirror = slot.mirror
        own_net = slot.idx in network_members
        reason = slot.static_reason or _restriction_reason(mirror, real, own_net, options)
        # A scheme the probes took down is not used; an HTTP request may fall back to HTTPS.
        down = slot.state.down_schemes
        https = mirror.https_url if Scheme.HTTPS not in down else None
        if needs_https:
            base = https
        else:
            base = (mirror.http_url if Scheme.HTTP not in down else None) or https
        if reason is None and base is None:
            offered = mirror.https_url if needs_https else (mirror.http_url or mirror.https_url)
            reason = Reason.NO_SCHEME if offered is None else Reason.SCHEME_DOWN
        if reason is not None:
            excluded.append(Exclusion(mirror, reason))
            continue
        assert base is not None
        # An override stands for "an unknown address in that country": no network/AS tier.
        tier = _tier(mirror, loc, own_net and not overridden)
        if overridden and tier <= Tier.ASN:
            tier = _tier(mirror, Location(loc.country, loc.continent), False)
        distance = None
        if (
            loc.latitude is not None
            and loc.longitude is not None
            and slot.latitude is not None
            and slot.longitude is not None
        ):
            distance = distance_km(loc.latitude, loc.longitude, slot.latitude, slot.longitude)
        key = (int(tier), float("inf") if distance is None else distance, slot.idx)
        ranked.append((key, Ranked(slot, tier, distance, base)))
    ranked.sort(key=lambda item: item[0])
    return make_profile([r for _, r in ranked], excluded, slot_of, slots)


def file_reason(
    slot: MirrorSlot, facts: FileFacts, confirmed_at: float | None = None
) -> Reason | None:
    """Why this mirror cannot serve this exact file, or None when it is fresh."""
    f = facts.file
    scope = slot.mirror.scope
    if scope and not f.path.startswith(scope):
        return Reason.OUT_OF_SCOPE
    if confirmed_at is not None and confirmed_at >= f.changed_at:
        # A re-check after the origin's change saw this version: it beats an older scan.
        return None
    bad = facts.bad
    if bad is not None and slot.idx in bad:
        kinds = facts.kinds
        if kinds is not None and kinds[bad.index(slot.idx)] == KIND_MISSING:
            return Reason.MISSING
        return Reason.OUTDATED
    last = slot.state.last_good_scan
    if last is None or last < f.changed_at:
        return Reason.STALE
    return None


def within_band(distance: float | None, limit: float | None) -> bool:
    """Whether a mirror at ``distance`` km is in a band that reaches ``limit`` km."""
    if limit is None:  # no distance information for the closest: the whole tier shares
        return True
    return distance is not None and distance <= limit
