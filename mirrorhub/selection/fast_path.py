"""The hot path's selection, from the profile's parallel tuples instead of objects.

:func:`fast_choose` makes exactly the choice :func:`~mirrorhub.selection.decision.choose`
makes with ``full=False`` (tests/test_fast_path.py holds them equal), in two parts:
:func:`band_walk`, which depends only on the profile and the file (the index caches its
:class:`FastBand` per pair), and :func:`pick_in_band`, the draw, held back by load.
"""

from __future__ import annotations

import bisect
import random
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from mirrorhub.fifo import FifoCache
from mirrorhub.load import (
    LoadView,
    _draw,
    further_weights,
    least_utilised,
    overflow_pick,
    spare,
    weighted_pick,
)
from mirrorhub.selection.ranking import (
    BAND_SHAPES_KEPT,
    FURTHER_CANDIDATES,
    KIND_MISSING,
    SPILL_CANDIDATES,
    Band,
    Profile,
    RoomMemo,
    within_band,
)

T = TypeVar("T")


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
    """The hot path's :func:`~mirrorhub.selection.decision.choose`: positions in ``profile.ranked``, chosen first, and
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


@dataclass(frozen=True, slots=True)
class FastBand:
    """The deterministic part of a pick: the band and the alternates after it.

    It depends only on the profile and the file, so the index may cache it per pair.
    """

    # Positions are ``bytes`` (``array('H')`` in rankings past 256 mirrors), not tuples:
    # objects the garbage collector never walks. A request mix wider than the band cache
    # makes a band per request, and a young collection visited every item of their tuples
    # (~0.3 s for 50,000 bands at 1M files). Capacities stay tuples of floats: read from
    # an array('d'), each was a new float, ~220 instructions more per redirect
    # (bench.instructions); a tuple of floats is untracked at its first collection.
    members: Sequence[int]  # positions in profile.ranked, rank order
    cumulative: tuple[float, ...]  # running capacity sums over members
    by_capacity: Sequence[int]  # members, largest capacity first (stable)
    others: Sequence[int]  # fresh candidates after the band (spill candidates first)
    member_caps: tuple[float, ...] = ()
    member_names: tuple[str, ...] = ()  # shared (_shared), as are the capacities
    spill_caps: tuple[float, ...] = ()
    spill_names: tuple[str, ...] = ()
    # by_capacity + others, cut to what an answer with ``head_alternates`` alternates can
    # list after any chosen mirror (one more than that): the alternates are read from here.
    head: Sequence[int] = ()
    head_alternates: int = -1
    # The file's facts the walk read and its pass (band_walk's arguments of those names):
    # a pick that has to look past the spill candidates (:func:`_further_positions`) holds
    # the mirrors there to the same rules. Fields, not one tuple: a tuple per cached band
    # was one more object for the garbage collector to walk.
    path: str = field(default="", compare=False)
    changed_at: float = field(default=0.0, compare=False)
    bad: Sequence[int] | None = field(default=None, compare=False)
    kinds: Sequence[int] | None = field(default=None, compare=False)
    confirmations: dict[int, float] | None = field(default=None, compare=False)
    tolerate: bool = field(default=False, compare=False)
    # The file's stamp (Index.stamps) when the band was walked: a cached band is good while
    # it is the file's current one (Index.fast_band; -1: not cached).
    stamp: int = field(default=-1, compare=False)
    # The 302's header lines per chosen position, kept by the dispatcher that owns the
    # index (mirrorhub.web.redirect: they follow from the band and the chosen mirror).
    answers: dict[int, bytes | None] = field(default_factory=dict, compare=False)


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
    stamp: int = -1,
) -> FastBand | None:
    if not tolerate:
        clean = profile.clean_walks.get(alternates)
        if clean is None or clean.band is not band:
            clean = profile.clean_walks[alternates] = _clean_walk(profile, band, alternates)
        if (
            changed_at <= clean.oldest_scan
            and (bad is None or clean.slots.isdisjoint(bad))
            and (not clean.scopes or all(path.startswith(s) for s in clean.scopes))
        ):
            # Every mirror the walk would visit holds the file current: it would accept
            # each, so its band is the clean walk's.
            shape = clean.shape
            if shape is None:
                return None
            return _band(
                shape, alternates, path, changed_at, bad, kinds, confirmations, False, stamp
            )
    members, others = _walk(
        profile, profile.scopes, path, changed_at, bad, kinds, confirmations, band, alternates,
        tolerate,
    )  # fmt: skip
    if not members:
        return None
    shape = _shared_shape(profile, members, others, alternates)
    return _band(shape, alternates, path, changed_at, bad, kinds, confirmations, tolerate, stamp)


@dataclass(frozen=True, slots=True)
class CleanWalk:
    """What :func:`band_walk` finds for a file that every mirror it visits holds current
    (none lacks it, none was last scanned before it changed, every scoped one carries its
    sub-tree): each is accepted, so the walk follows from the ranking alone. A file is
    such a file when nothing it is tested on fails for the mirrors in ``slots``."""

    band: Band
    shape: FastBand | None  # None: an empty ranking
    slots: frozenset[int]  # the mirrors (slot indices) the walk visits
    oldest_scan: float  # their oldest last scan
    scopes: tuple[tuple[str, ...], ...]  # the sub-trees of the scoped ones among them


def _clean_walk(profile: Profile, band: Band, alternates: int) -> CleanWalk:
    no_scopes: tuple[tuple[str, ...], ...] = ((),) * len(profile.scopes)
    members, others = _walk(
        profile, no_scopes, "", float("-inf"), None, None, None, band, alternates, False
    )
    visited = members + others
    return CleanWalk(
        band,
        _shared_shape(profile, members, others, alternates) if members else None,
        frozenset(profile.idx[i] for i in visited),
        min((profile.last_scans[i] for i in visited), default=float("inf")),
        tuple({profile.scopes[i] for i in visited if profile.scopes[i]}),
    )


def _walk(
    profile: Profile,
    scopes: Sequence[tuple[str, ...]],
    path: str,
    changed_at: float,
    bad: Sequence[int] | None,
    kinds: Sequence[int] | None,
    confirmations: dict[int, float] | None,
    band: Band,
    alternates: int,
    tolerate: bool,
) -> tuple[list[int], list[int]]:
    """The band's members and the fresh candidates after it: positions in the ranking."""
    idx, tiers, dists = profile.idx, profile.tiers, profile.distances
    last_scans = profile.last_scans
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
        if not closed and tiers[i] == best_tier and within_band(dists[i], limit):
            members.append(i)
            continue
        closed = True
        others.append(i)
        if len(others) >= max(alternates, SPILL_CANDIDATES):
            break
    return members, others


def _band(
    shape: FastBand,
    alternates: int,
    path: str,
    changed_at: float,
    bad: Sequence[int] | None,
    kinds: Sequence[int] | None,
    confirmations: dict[int, float] | None,
    tolerate: bool,
    stamp: int,
) -> FastBand:
    """A band with ``shape``'s positions and the file's own facts."""
    return FastBand(
        shape.members,
        shape.cumulative,
        shape.by_capacity,
        shape.others,
        shape.member_caps,
        shape.member_names,
        shape.spill_caps,
        shape.spill_names,
        shape.head,
        alternates,
        path,
        changed_at,
        bad,
        kinds,
        confirmations,
        tolerate,
        stamp,
    )


def _shared_shape(
    profile: Profile, members: list[int], others: list[int], alternates: int
) -> FastBand:
    """Most files have the band of most others for this ranking (every near mirror holds
    them): those bands share one shape's tuples (~1 KB of the ~1.5 KB a band held)."""
    key = (alternates, len(members), *members, *others)
    shapes = profile.band_shapes
    shape = shapes.get(key)
    if shape is None:
        shape = _shape(profile, members, others, alternates)
        if len(shapes) < BAND_SHAPES_KEPT:
            shapes[key] = shape
    return shape


def _shape(profile: Profile, members: list[int], others: list[int], alternates: int) -> FastBand:
    """A band's tuples, which follow from the ranking and its positions alone."""
    caps, names = profile.capacities, profile.mirror_names
    cumulative = []
    acc = 0.0
    for i in members:
        acc += caps[i]
        cumulative.append(acc)
    by_capacity = sorted(members, key=lambda i: -caps[i])
    spill = others[:SPILL_CANDIDATES]
    positions = bytes if len(caps) <= 256 else _wide_positions
    return FastBand(
        positions(members),
        _shared(tuple(cumulative)),
        positions(by_capacity),
        positions(others),
        _shared(tuple([caps[i] for i in members])),
        _shared(tuple([names[i] for i in members])),
        _shared(tuple([caps[i] for i in spill])),
        _shared(tuple([names[i] for i in spill])),
        positions((by_capacity + others)[: alternates + 1]),
        alternates,
    )


def _wide_positions(values: list[int]) -> Sequence[int]:
    return array("H", values)


# The names and capacities of band members and spill candidates: few distinct tuples (the
# mirrors near one place), so a band takes the kept one and the tuple just made is freed
# at once, before the collector ever walks it (a ranking of clients without a location is
# one band of every mirror: three tuples of 200 items per band, unshared).
_TUPLES_KEPT: FifoCache[tuple[object, ...], tuple[object, ...]] = FifoCache(8192)


def _shared(values: tuple[T, ...]) -> tuple[T, ...]:
    return _TUPLES_KEPT.intern(values)  # type: ignore[return-value]  # equal: the same items


def pick_in_band(
    found: FastBand,
    profile: Profile,
    rng: random.Random,
    alternates: int,
    load: LoadView | None = None,
    size: int = 0,
) -> list[int]:
    """Draw the mirror (:func:`draw_in_band`), then list the alternates after it."""
    return band_order(found, draw_in_band(found, profile, rng, load, size), alternates)


def draw_in_band(
    found: FastBand,
    profile: Profile,
    rng: random.Random,
    load: LoadView | None = None,
    size: int = 0,
) -> int:
    """The chosen mirror's position in ``profile.ranked``: capacity-weighted, held back by
    load.

    With a warm load view, the band's factors are computed first. When none holds a member
    back, :func:`~mirrorhub.load.weighted_pick` would make the plain capacity-weighted draw
    (one ``rng.random()``, the same point on the same running sums), so that draw is made
    here. When some but not all members are held back, ``weighted_pick`` keeps the file in
    the band without looking at the spill candidates, so their factors are not computed.
    When every member and every spill candidate is held back entirely (factor 0),
    :func:`_held_back_pick` decides. Otherwise all factors go to ``weighted_pick``.
    ``choose`` does the same. ``profile`` is the ranking ``found`` was walked in.
    """
    if load is not None and load.warm:
        if load.stopped.issuperset(found.member_names) and load.stopped.issuperset(
            found.spill_names
        ):
            # load_factors would give 0 for each (a factor of 0 stays 0 whatever the file's
            # size): the branch below that ends in _held_back_pick, without its loops.
            return _held_back_pick(found, profile, load, size, rng)
        band_f = load_factors(load, found.member_names, size)
        if band_f.count(1.0) != len(band_f):
            if 1.0 in band_f:  # a member with room takes what the held-back ones shed
                in_band, k = weighted_pick(found.member_caps, band_f, (), (), rng)
                return found.members[k] if in_band else found.others[k]
            spill_f = load_factors(load, found.spill_names, size)
            if any(band_f) or any(spill_f):
                in_band, k = weighted_pick(
                    found.member_caps, band_f, found.spill_caps, spill_f, rng
                )
                return found.members[k] if in_band else found.others[k]
            return _held_back_pick(found, profile, load, size, rng)
    cumulative = found.cumulative
    n = bisect.bisect_right(cumulative, rng.random() * cumulative[-1])
    # Past the end only when the product rounds up to the total. A conditional, not min():
    # the builtin costs ~150 ns more on this path.
    members = found.members
    return members[n] if n < len(members) else members[-1]


def band_order(found: FastBand, first: int, alternates: int) -> list[int]:
    """``first``, then the alternates: band members by capacity, then the candidates after
    the band; ``alternates + 1`` positions at most."""
    order = [first]
    head = found.head
    if found.head_alternates < alternates:  # more alternates than the band was cut for
        head = (*found.by_capacity, *found.others)
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
    names = found.member_names + found.spill_names
    below = load.below_capacity
    # None of them below its capacity (the usual case in a saturated fleet): the file fits
    # on none, and overflow_pick would take the least utilised, which least_utilised finds
    # without the list of spare() and its max(). Else spare() tells.
    room = None if below.isdisjoint(names) else spare(load, names, size)
    if below and len(found.others) >= SPILL_CANDIDATES and (room is None or max(room) <= 0.0):
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
            if further:
                weights = further_weights(
                    [float(profile.capacities[i]) for i in further],
                    load_factors(load, [profile.mirror_names[i] for i in further], size),
                    further_room,
                )
                return further[_draw(weights, rng.random() * sum(weights))]
    if room is None:
        k = least_utilised(load, names, size)
        if k is not None:
            rng.random()  # overflow_pick's one draw, kept so the generator moves on alike
            n = len(found.members)
            return found.members[k] if k < n else found.others[k - n]
        room = spare(load, names, size)
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
    """``decision._further`` over the profile's tuples: of ``candidates`` (positions of mirrors
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
    path, changed_at, bad, kinds = found.path, found.changed_at, found.bad, found.kinds
    confirmations, tolerate = found.confirmations, found.tolerate
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
