"""Mirror selection: filter -> tier -> band -> capacity-weighted pick. Pure functions.

Selection runs in two steps so that the hot path stays cheap:

1. :func:`rank_mirrors` depends only on the client and the request options. It gives every
   mirror either an :class:`~mirrorhub.domain.Exclusion` that holds for any file (disabled,
   down, a restriction, ...) or a place in the ranking by (tier, distance). Its result, a
   :class:`Profile`, is cached per client profile by the index.
2. :func:`choose` walks that ranking for one file, skips mirrors that are not fresh for it,
   forms the band of near mirrors within the best tier, and picks one at random weighted by
   capacity. The same function makes the 302 (``full=False``: stops once it has enough) and
   the mirror list / JSON views (``full=True``: every mirror classified).
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field

from mirrorhub.domain import (
    Candidate,
    Client,
    Decision,
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
from mirrorhub.load import (
    SPILL_DECAY,
    LoadView,
    _draw,
    absorb,
    further_weights,
    overflow_pick,
    spare,
    weighted_pick,
)

# Order in which per-file reasons are reported by kind code stored in the index.
KIND_MISSING = 0
KIND_OUTDATED = 1
SPILL_CANDIDATES = 8  # fresh mirrors after the band that may take traffic a full band sheds
# Fresh mirrors past the spill candidates (nearest first, with room for the file) that may
# take a file for which neither the band nor any spill candidate has room left.
FURTHER_CANDIDATES = 8


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
    """What :func:`_held_back_pick` last found for a profile: the positions in its
    ranking of the mirrors in ``below`` (a view's ``below_capacity``) when that had ``size``
    members. Holding the set keeps its id from being reused; it only shrinks, so its size
    tells whether it changed."""

    below: set[str] | None = None
    size: int = 0
    positions: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Profile:
    """What selection knows about a client before looking at a file.

    Besides the ranking itself it keeps the ranked mirrors' facts as parallel tuples, so the
    hot path (:func:`fast_choose`) walks plain values instead of objects.
    """

    ranked: tuple[Ranked, ...]  # best first
    excluded: tuple[Exclusion, ...]
    idx: tuple[int, ...] = ()
    tiers: tuple[int, ...] = ()
    distances: tuple[float | None, ...] = ()
    scopes: tuple[tuple[str, ...], ...] = ()
    last_scans: tuple[float, ...] = ()
    capacities: tuple[int, ...] = ()
    bases: tuple[bytes, ...] = ()  # base URL for this request's scheme, ASCII
    names: tuple[bytes, ...] = ()
    geo_suffixes: tuple[bytes, ...] = ()  # b"; geo=de" for Link headers, or b""
    link_prefixes: tuple[bytes, ...] = ()  # b"<" + base, for Link headers
    mirror_names: tuple[str, ...] = ()
    serial: int = 0  # names this profile in the index's per-(profile, file) band cache
    # By slot index: 1 + the mirror's position in ``ranked``, 0 when it is not ranked. With
    # ``slot_of`` (mirror name -> slot index) the fast path finds where the mirrors that
    # still have room stand in this ranking without walking it. Both follow from ``ranked``.
    rank_of: Sequence[int] = field(default=(), compare=False)
    slot_of: Mapping[str, int] = field(default_factory=dict, compare=False)
    room_memo: RoomMemo = field(default_factory=lambda: RoomMemo(), compare=False, repr=False)


def make_profile(
    ranked: Sequence[Ranked],
    excluded: Sequence[Exclusion],
    slot_of: Mapping[str, int] | None = None,
) -> Profile:
    """``slot_of`` maps every slot's mirror name to its index (the index shares one map
    between its profiles); by default one is made from ``ranked``."""
    rank_of = array("H", bytes(2 * (1 + max((r.slot.idx for r in ranked), default=-1))))
    for pos, r in enumerate(ranked):
        rank_of[r.slot.idx] = pos + 1
    if slot_of is None:
        slot_of = {r.slot.mirror.name: r.slot.idx for r in ranked}
    return Profile(
        tuple(ranked),
        tuple(excluded),
        tuple(r.slot.idx for r in ranked),
        tuple(int(r.tier) for r in ranked),
        tuple(r.distance for r in ranked),
        tuple(r.slot.mirror.scope for r in ranked),
        tuple(r.slot.state.last_good_scan or 0.0 for r in ranked),
        tuple(r.slot.mirror.capacity for r in ranked),
        tuple(r.base.encode("ascii") for r in ranked),
        tuple(r.slot.mirror.name.encode("ascii", "replace") for r in ranked),
        tuple(
            f"; geo={r.slot.mirror.country.lower()}".encode() if r.slot.mirror.country else b""
            for r in ranked
        ),
        tuple(b"<" + r.base.encode("ascii") for r in ranked),
        tuple(r.slot.mirror.name for r in ranked),
        rank_of=rank_of,
        slot_of=slot_of,
    )


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
    return make_profile([r for _, r in ranked], excluded, slot_of)


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


TOLERABLE = frozenset({Reason.OUTDATED, Reason.STALE})


def choose(
    profile: Profile,
    facts: FileFacts,
    quoted_path: str,
    rng: random.Random,
    *,
    band: Band,
    alternates: int,
    full: bool,
    client: Client,
    options: Options,
    confirmations: dict[int, float] | None = None,
    tolerate_outdated: bool = False,
    load: LoadView | None = None,
) -> Decision:
    """Pick a mirror for one file. ``quoted_path`` is the path already %-encoded.

    ``tolerate_outdated`` (the path's ``allow_outdated`` window is open) lets mirrors with
    an older version serve, but only when no mirror holds the current one.
    """
    decision = _choose(
        profile, facts, quoted_path, rng, band, alternates, full, client, options,
        confirmations, tolerate=False, load=load,
    )  # fmt: skip
    if decision.chosen is None and tolerate_outdated:
        tolerant = _choose(
            profile, facts, quoted_path, rng, band, alternates, full, client, options,
            confirmations, tolerate=True, load=load,
        )  # fmt: skip
        if tolerant.chosen is not None:
            return tolerant
    return decision


def _choose(
    profile: Profile,
    facts: FileFacts,
    quoted_path: str,
    rng: random.Random,
    band: Band,
    alternates: int,
    full: bool,
    client: Client,
    options: Options,
    confirmations: dict[int, float] | None,
    *,
    tolerate: bool,
    load: LoadView | None = None,
) -> Decision:
    band_members: list[Ranked] = []
    others: list[Ranked] = []
    excluded: list[Exclusion] = list(profile.excluded) if full else []
    best_tier: Tier | None = None
    band_limit: float | None = None
    band_closed = False
    spill_end = len(profile.ranked)  # position of the last spill candidate
    for pos, r in enumerate(profile.ranked):
        confirmed = confirmations.get(r.slot.idx) if confirmations else None
        reason = file_reason(r.slot, facts, confirmed)
        if reason is not None and not (tolerate and reason in TOLERABLE):
            if full:
                excluded.append(Exclusion(r.slot.mirror, reason))
            continue
        if best_tier is None:
            best_tier = r.tier
            band_limit = None if r.distance is None else band.limit(r.distance)
            band_members.append(r)
            continue
        if not band_closed and r.tier == best_tier and _in_band(r.distance, band_limit):
            band_members.append(r)
            continue
        band_closed = True
        others.append(r)
        if len(others) == SPILL_CANDIDATES:
            spill_end = pos
        if not full and len(others) >= max(alternates, SPILL_CANDIDATES):
            break
    if not band_members:
        return Decision(
            facts.file.path, facts.file, client, options, None, (), tuple(excluded), None
        )
    caps = [float(r.slot.mirror.capacity) for r in band_members]
    spill = others[:SPILL_CANDIDATES]
    size = facts.file.size
    shares: dict[int, float]
    if load is None or not load.warm:
        chosen = band_members[_draw(caps, rng.random() * sum(caps))]
        shares = {id(r): c / sum(caps) for r, c in zip(band_members, caps, strict=True)}
    else:
        band_f = [load.factor_for(r.slot.mirror.name, size) for r in band_members]
        spill_caps = [float(r.slot.mirror.capacity) for r in spill]
        spill_f = [load.factor_for(r.slot.mirror.name, size) for r in spill]
        if any(band_f) or any(spill_f):
            in_band, index = weighted_pick(caps, band_f, spill_caps, spill_f, rng)
            chosen = band_members[index] if in_band else spill[index]
            shares = _load_shares(band_members, caps, band_f, spill, spill_caps, spill_f)
        else:
            candidates = [*band_members, *spill]
            room = spare(load, [r.slot.mirror.name for r in candidates], size)
            further: list[Ranked] = []
            if load.below_capacity and len(spill) == SPILL_CANDIDATES and max(room) <= 0.0:
                # It fits nowhere near: rather a mirror further away than one over capacity.
                further = _further(profile, spill_end + 1, facts, confirmations, tolerate, load)
            if further:
                names = [r.slot.mirror.name for r in further]
                weights = further_weights(
                    [float(r.slot.mirror.capacity) for r in further],
                    [load.factor_for(name, size) for name in names],
                    spare(load, names, size),
                )
                total = sum(weights)
                chosen = further[_draw(weights, rng.random() * total)]
                shares = {id(r): w / total for r, w in zip(further, weights, strict=True)}
            else:
                in_band, index = overflow_pick(len(band_members), room, rng)
                chosen = band_members[index] if in_band else spill[index]
                fits = [r if r > 0.0 else 0.0 for r in room]
                if sum(fits) > 0.0:
                    shares = {id(r): w / sum(fits) for r, w in zip(candidates, fits, strict=True)}
                else:
                    shares = {id(chosen): 1.0}
    rest = [r for r in band_members if r is not chosen]
    rest.sort(key=lambda r: -r.slot.mirror.capacity)

    def candidate(r: Ranked) -> Candidate:
        share = shares.get(id(r), 0.0)
        return Candidate(r.slot.mirror, r.base + quoted_path, r.tier, r.distance, share, tolerate)

    ranked = [candidate(chosen)]
    ranked.extend(candidate(r) for r in rest)
    ranked.extend(candidate(r) for r in others if r is not chosen)
    if not full:
        ranked = ranked[: alternates + 1]
    return Decision(
        facts.file.path, facts.file, client, options, ranked[0], tuple(ranked), tuple(excluded)
    )


def _further(
    profile: Profile,
    start: int,
    facts: FileFacts,
    confirmations: dict[int, float] | None,
    tolerate: bool,
    load: LoadView,
) -> list[Ranked]:
    """Up to FURTHER_CANDIDATES mirrors from ``profile.ranked[start]`` on, nearest first,
    that hold the file (by the same rules as the band) and have room for it under 100 %."""
    found: list[Ranked] = []
    for r in profile.ranked[start:]:
        confirmed = confirmations.get(r.slot.idx) if confirmations else None
        reason = file_reason(r.slot, facts, confirmed)
        if reason is not None and not (tolerate and reason in TOLERABLE):
            continue
        if spare(load, (r.slot.mirror.name,), facts.file.size)[0] > 0.0:
            found.append(r)
            if len(found) == FURTHER_CANDIDATES:
                break
    return found


def _load_shares(
    band: Sequence[Ranked],
    caps: Sequence[float],
    band_f: Sequence[float],
    spill: Sequence[Ranked],
    spill_caps: Sequence[float],
    spill_f: Sequence[float],
) -> dict[int, float]:
    """Each mirror's share of this file's traffic under :func:`weighted_pick`."""
    nominal = sum(caps)
    effective = [c * f for c, f in zip(caps, band_f, strict=True)]
    eff_total = sum(effective)
    if eff_total < nominal and 1.0 in band_f:  # members with room take the shed share
        weights = absorb(caps, band_f, effective, nominal - eff_total)
        return {id(r): w / nominal for r, w in zip(band, weights, strict=True)}
    weights = [
        c * f * SPILL_DECAY**k for k, (c, f) in enumerate(zip(spill_caps, spill_f, strict=True))
    ]
    spill_total = sum(weights)
    if eff_total >= nominal or spill_total <= 0:
        base = caps if eff_total >= nominal or eff_total <= 0 else effective
        total = sum(base)
        return {id(r): w / total for r, w in zip(band, base, strict=True)}
    spill_share = 1.0 - eff_total / nominal
    shares = {id(r): w / nominal for r, w in zip(band, effective, strict=True)}
    shares.update(
        {id(r): spill_share * w / spill_total for r, w in zip(spill, weights, strict=True)}
    )
    return shares


def fast_choose(
    profile: Profile,
    path: str,
    changed_at: float,
    bad: Sequence[int] | None,
    kinds: Sequence[int] | None,
    confirmations: dict[int, float] | None,
    rng: random.Random,
    band: Band,
    alternates: int,
    tolerate: bool,
    load: LoadView | None = None,
    size: int = 0,
) -> tuple[list[int], bool] | None:
    """The hot path's :func:`choose`: positions in ``profile.ranked``, chosen first, and
    whether the pick came from the allow_outdated pass.

    Makes exactly the choice ``choose(..., full=False)`` makes (a property test holds them
    equal) without building objects: it walks the profile's parallel tuples.
    """
    args = (profile, path, changed_at, bad, kinds, confirmations, band, alternates)
    found = band_walk(*args, False)
    if found is not None:
        return pick_in_band(found, profile, rng, alternates, load, size), False
    if tolerate:
        found = band_walk(*args, True)
        if found is not None:
            return pick_in_band(found, profile, rng, alternates, load, size), True
    return None


WalkedFacts = tuple[
    str, float, Sequence[int] | None, Sequence[int] | None, dict[int, float] | None, bool
]


@dataclass(frozen=True, slots=True)
class FastBand:
    """The deterministic part of a pick: the band and the alternates after it.

    It depends only on the profile and the file, so the index may cache it per pair.
    """

    members: tuple[int, ...]  # positions in profile.ranked, rank order
    cumulative: tuple[float, ...]  # running capacity sums over members
    by_capacity: tuple[int, ...]  # members, largest capacity first (stable)
    others: tuple[int, ...]  # fresh candidates after the band (spill candidates first)
    member_caps: tuple[float, ...] = ()
    member_names: tuple[str, ...] = ()
    spill_caps: tuple[float, ...] = ()
    spill_names: tuple[str, ...] = ()
    # by_capacity + others, cut to what an answer with ``head_alternates`` alternates can
    # list after any chosen mirror (one more than that): the alternates are read from here.
    head: tuple[int, ...] = ()
    head_alternates: int = -1
    # The file's facts the walk read and its pass (band_walk's arguments from ``path`` to
    # ``confirmations``, then ``tolerate``): a pick that has to look past the spill
    # candidates (:func:`_further_positions`) holds the mirrors there to the same rules.
    walked: WalkedFacts = field(default=("", 0.0, None, None, None, False), compare=False)


def band_walk(
    profile: Profile,
    path: str,
    changed_at: float,
    bad: Sequence[int] | None,
    kinds: Sequence[int] | None,
    confirmations: dict[int, float] | None,
    band: Band,
    alternates: int,
    tolerate: bool,
) -> FastBand | None:
    idx, tiers, dists = profile.idx, profile.tiers, profile.distances
    scopes, last_scans, caps = profile.scopes, profile.last_scans, profile.capacities
    members: list[int] = []
    others: list[int] = []
    best_tier = -1
    limit: float | None = None
    closed = False
    for i in range(len(idx)):
        scope = scopes[i]
        if scope and not path.startswith(scope):
            continue
        m = idx[i]
        confirmed = confirmations.get(m) if confirmations else None
        if confirmed is None or confirmed < changed_at:
            if bad is not None and m in bad:
                # The tolerant pass accepts an outdated copy, never a missing one.
                if not tolerate or (kinds is not None and kinds[bad.index(m)] == KIND_MISSING):
                    continue
            elif last_scans[i] < changed_at and not tolerate:
                continue
        if best_tier < 0:
            best_tier = tiers[i]
            d = dists[i]
            limit = None if d is None else band.limit(d)
            members.append(i)
            continue
        if not closed and tiers[i] == best_tier and _in_band(dists[i], limit):
            members.append(i)
            continue
        closed = True
        others.append(i)
        if len(others) >= max(alternates, SPILL_CANDIDATES):
            break
    if not members:
        return None
    cumulative = []
    acc = 0.0
    for i in members:
        acc += caps[i]
        cumulative.append(acc)
    by_capacity = sorted(members, key=lambda i: -caps[i])
    spill = others[:SPILL_CANDIDATES]
    names = profile.mirror_names
    return FastBand(
        tuple(members),
        tuple(cumulative),
        tuple(by_capacity),
        tuple(others),
        tuple(float(caps[i]) for i in members),
        tuple(names[i] for i in members),
        tuple(float(caps[i]) for i in spill),
        tuple(names[i] for i in spill),
        tuple((by_capacity + others)[: alternates + 1]),
        alternates,
        (path, changed_at, bad, kinds, confirmations, tolerate),
    )


def pick_in_band(
    found: FastBand,
    profile: Profile,
    rng: random.Random,
    alternates: int,
    load: LoadView | None = None,
    size: int = 0,
) -> list[int]:
    """Draw the mirror (capacity-weighted, held back by load), then list the alternates.

    With a warm load view, the band's factors are computed first. When none holds a member
    back, :func:`~mirrorhub.load.weighted_pick` would make the plain capacity-weighted draw
    (one ``rng.random()``, the same point on the same running sums), so that draw is made
    here. When some but not all members are held back, ``weighted_pick`` keeps the file in
    the band without looking at the spill candidates, so their factors are not computed.
    When every member and every spill candidate is held back entirely (factor 0),
    :func:`_held_back_pick` decides. Otherwise all factors go to ``weighted_pick``.
    :func:`choose` does the same. ``profile`` is the ranking ``found`` was walked in.
    """
    first = -1
    if load is not None and load.warm:
        band_f = load_factors(load, found.member_names, size)
        if band_f.count(1.0) != len(band_f):
            if 1.0 in band_f:  # a member with room takes what the held-back ones shed
                in_band, k = weighted_pick(found.member_caps, band_f, (), (), rng)
                first = found.members[k] if in_band else found.others[k]
            else:
                spill_f = load_factors(load, found.spill_names, size)
                if any(band_f) or any(spill_f):
                    in_band, k = weighted_pick(
                        found.member_caps, band_f, found.spill_caps, spill_f, rng
                    )
                    first = found.members[k] if in_band else found.others[k]
                else:
                    first = _held_back_pick(found, profile, load, size, rng)
    if first < 0:
        cumulative = found.cumulative
        n = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
        first = found.members[min(n, len(cumulative) - 1)]
    order = [first]
    # The alternates: band members by capacity, then the candidates after the band.
    head = found.head if found.head_alternates >= alternates else found.by_capacity + found.others
    for i in head:
        if i != first:
            order.append(i)
    return order[: alternates + 1]


def _held_back_pick(
    found: FastBand, profile: Profile, load: LoadView, size: int, rng: random.Random
) -> int:
    """The position chosen when every band member and spill candidate is held back
    entirely: where the file fits under 100 % on none of them, the nearest fresh mirrors
    past them with room for it (:func:`~mirrorhub.load.further_weights`); else, or
    without such mirrors, :func:`~mirrorhub.load.overflow_pick` among band and spill."""
    room = spare(load, found.member_names + found.spill_names, size)
    below = load.below_capacity
    if below and len(found.others) >= SPILL_CANDIDATES:
        # Where the mirrors below capacity stand in this ranking, kept per profile while
        # the view's set stays the same: in a saturated fleet they are mostly mirrors no
        # client gets (down, disabled), and a few comparisons tell.
        memo = profile.room_memo
        if memo.below is not below or memo.size != len(below):
            _remember_room(memo, profile, below)
        positions, last = memo.positions, found.others[SPILL_CANDIDATES - 1]
        if positions and positions[-1] > last:
            past = positions[bisect.bisect_right(positions, last) :]
            further, further_room = _further_positions(found, profile, past, load, size)
            if further and max(room) <= 0.0:
                weights = further_weights(
                    [float(profile.capacities[i]) for i in further],
                    load_factors(load, [profile.mirror_names[i] for i in further], size),
                    further_room,
                )
                return further[_draw(weights, rng.random() * sum(weights))]
    in_band, k = overflow_pick(len(found.members), room, rng)
    return found.members[k] if in_band else found.others[k]


def _remember_room(memo: RoomMemo, profile: Profile, below: set[str]) -> None:
    rank_of, slot_of = profile.rank_of, profile.slot_of
    n = len(rank_of)
    memo.positions = tuple(
        sorted(i for m in below if (s := slot_of.get(m, n)) < n and (i := rank_of[s] - 1) >= 0)
    )
    memo.below, memo.size = below, len(below)


def _further_positions(
    found: FastBand, profile: Profile, candidates: Sequence[int], load: LoadView, size: int
) -> tuple[list[int], list[float]]:
    """:func:`_further` over the profile's tuples: of ``candidates`` (positions of mirrors
    below capacity, rank order), up to FURTHER_CANDIDATES where the file fits under 100 %
    and which hold it by the walk's rules; and the room each has left, as
    :func:`~mirrorhub.load.spare` gives it."""
    names, capacities, mbps = profile.mirror_names, load.capacities, load.mbps
    extra = size * 8 / 1e6 / load.window
    further: list[int] = []
    room: list[float] = []
    for i in candidates:
        name = names[i]
        capacity = capacities.get(name)
        used = mbps.get(name, 0.0) + extra
        if capacity and used < capacity and _fresh(found, profile, i):
            further.append(i)
            room.append(capacity - used)
            if len(further) == FURTHER_CANDIDATES:
                break
    return further, room


def _fresh(found: FastBand, profile: Profile, i: int) -> bool:
    """Whether the mirror at position ``i`` may serve the file: :func:`band_walk`'s test."""
    path, changed_at, bad, kinds, confirmations, tolerate = found.walked
    scope = profile.scopes[i]
    if scope and not path.startswith(scope):
        return False
    m = profile.idx[i]
    confirmed = confirmations.get(m) if confirmations else None
    if confirmed is None or confirmed < changed_at:
        if bad is not None and m in bad:
            return tolerate and not (kinds is not None and kinds[bad.index(m)] == KIND_MISSING)
        if profile.last_scans[i] < changed_at and not tolerate:
            return False
    return True


def load_factors(load: LoadView, names: Sequence[str], nbytes: int) -> list[float]:
    """``[load.factor_for(name, nbytes) for name in names]``, the same arithmetic in one loop.

    The hot path asks for up to 16 factors per redirect while mirrors are warm; one Python
    call per name (plus :func:`~mirrorhub.load.load_factor` and ``min``) cost ~1 µs each.
    tests/web/test_redirect.py holds this equal to ``LoadView.factor_for``.
    """
    capacities, mbps, factors = load.capacities, load.mbps, load.factors
    soft, hard = load.soft, load.hard
    extra = nbytes * 8 / 1e6 / load.window
    out = []
    for name in names:
        f = factors.get(name, 1.0)
        if f == 0.0:  # held back entirely: min(0.0, anything load_factor gives) is 0.0
            out.append(f)
            continue
        capacity = capacities.get(name)
        if capacity:
            u = (mbps.get(name, 0.0) + extra) / capacity
            held = 1.0 if u <= soft else 0.0 if u >= hard else (hard - u) / (hard - soft)
            if held < f:  # min(f, held), which keeps f on a tie
                f = held
        out.append(f)
    return out


def _in_band(distance: float | None, limit: float | None) -> bool:
    if limit is None:  # no distance information for the closest: the whole tier shares
        return True
    return distance is not None and distance <= limit
