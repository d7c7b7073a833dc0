"""Capacity-aware distribution: how much traffic each mirror gets, and how to hold it back.

The dispatcher cannot see the bytes a mirror serves, but it knows what it sends there: each
redirect adds the file's size to that mirror's sliding window (the last ``window`` seconds).
The estimate in Mbit/s, combined with other dispatchers' estimates, gives a utilisation per
mirror; :func:`load_factor` turns utilisation into a weight multiplier that stays 1 while a
mirror has room, falls to 0 as it reaches its capacity, and comes back as load drops.
:func:`weighted_pick` uses the multipliers: what held-back band members shed goes to the
band's members with room while there are any, else to the next-best fresh mirrors, nearest
first; a file that fits under 100 % on none of those goes further down the client's ranking
(:func:`further_weights`) while some mirror in the fleet is still below its capacity.

Everything here is pure or takes an injected clock, so tests are deterministic.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

SOFT = 0.9  # utilisation at which a mirror starts to be held back
HARD = 0.98  # no new traffic from here: leaves room for the window estimate's step error
SPILL_DECAY = 0.5  # each further spill candidate gets half the weight of the one before
WARM = 0.4  # utilisation from which a mirror is watched per request


def load_factor(utilisation: float, soft: float = SOFT, hard: float = HARD) -> float:
    """1 below ``soft``, 0 at or above ``hard``, linear in between."""
    if utilisation <= soft:
        return 1.0
    if utilisation >= hard:
        return 0.0
    return (hard - utilisation) / (hard - soft)


class LoadEstimator:
    """Bytes redirected to each mirror over a sliding window, in buckets of ``step`` s.

    ``add`` is on the hot path: a dict lookup and two additions.
    """

    def __init__(
        self,
        window: float = 60.0,
        step: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.step = step
        self.clock = clock
        self.slots = max(1, math.ceil(window / step))
        self._buckets: dict[str, list[float]] = {}
        self._epoch = self._tick(clock())

    def _tick(self, now: float) -> int:
        return int(now // self.step)

    def _advance(self, now: float) -> int:
        tick = self._tick(now)
        if tick > self._epoch:  # an earlier time (a late ``add(at=...)``) keeps the window
            gone = min(tick - self._epoch, self.slots)
            for buckets in self._buckets.values():
                for k in range(1, gone + 1):
                    buckets[(self._epoch + k) % self.slots] = 0.0
            self._epoch = tick
        return tick % self.slots

    def add(self, mirror: str, nbytes: int, at: float | None = None) -> None:
        """Count ``nbytes`` sent to ``mirror`` now, or at ``at`` (a time of this clock)."""
        now = self.clock() if at is None else at
        if self._tick(now) <= self._epoch - self.slots:
            return  # older than the window
        slot = self._advance(now)
        buckets = self._buckets.get(mirror)
        if buckets is None:
            buckets = self._buckets[mirror] = [0.0] * self.slots
        buckets[slot] += nbytes

    def mbps(self) -> dict[str, float]:
        """Estimated Mbit/s sent to each mirror over the window."""
        self._advance(self.clock())
        scale = 8 / 1e6 / self.window
        return {m: sum(b) * scale for m, b in self._buckets.items()}


class LoadView:
    """What selection needs: a weight multiplier per mirror name (absent = 1).

    Rebuilt from the window estimates every sync; in between, :meth:`add` applies this
    dispatcher's own redirects at once, so a burst cannot overrun a mirror between syncs.
    """

    __slots__ = (
        "below_capacity",
        "capacities",
        "factors",
        "hard",
        "mbps",
        "soft",
        "stopped",
        "warm",
        "window",
    )

    def __init__(
        self,
        factors: Mapping[str, float],
        mbps: Mapping[str, float],
        capacities: Mapping[str, int] | None = None,
        window: float = 60.0,
        soft: float = SOFT,
        hard: float = HARD,
    ) -> None:
        self.factors = dict(factors)
        self.mbps = dict(mbps)  # fleet-wide estimate, for display
        self.capacities = dict(capacities or {})
        self.window = window
        self.soft = soft
        self.hard = hard
        # Mirrors busy enough that one large file could tip them over: only while there are
        # any does selection pay for the per-request check.
        self.warm = set(self.factors) | {
            m
            for m, v in self.mbps.items()
            if m in self.capacities and v >= WARM * self.capacities[m]
        }
        # Mirrors still below 100 % of their capacity: while a view lives its traffic only
        # grows (:meth:`add`), so this only shrinks, and a mirror not in it has no room for
        # any file. Selection looks past a client's spill candidates only for mirrors in it.
        self.below_capacity = {
            m for m, c in self.capacities.items() if c and self.mbps.get(m, 0.0) < c
        }
        # Mirrors held back entirely (factor 0), kept with ``factors``: in a saturated fleet
        # selection tells from two set tests that a band takes nothing, instead of working
        # out each member's factor.
        self.stopped = {m for m, f in self.factors.items() if f == 0.0}

    def factor(self, mirror: str) -> float:
        return self.factors.get(mirror, 1.0)

    def factor_for(self, mirror: str, nbytes: int) -> float:
        """The multiplier for sending one more file of ``nbytes`` to ``mirror``.

        Judged on the utilisation *after* this file, so a large file does not push a mirror
        that is just below its limit over it.
        """
        capacity = self.capacities.get(mirror)
        if not capacity:
            return self.factors.get(mirror, 1.0)
        after = self.mbps.get(mirror, 0.0) + nbytes * 8 / 1e6 / self.window
        return min(
            self.factors.get(mirror, 1.0), load_factor(after / capacity, self.soft, self.hard)
        )

    def add(self, mirror: str, nbytes: int) -> None:
        # mirrorhub.web.recording.HotRecorder stores the new estimate itself while a mirror
        # is below WARM and the soft limit, or stopped, past its capacity and past the hard
        # limit with this file, and calls this otherwise: change both together.
        capacity = self.capacities.get(mirror)
        if not capacity:
            return
        mbps = self.mbps.get(mirror, 0.0) + nbytes * 8 / 1e6 / self.window
        self.mbps[mirror] = mbps
        if mbps >= WARM * capacity:
            self.warm.add(mirror)
            if mbps >= capacity:
                self.below_capacity.discard(mirror)
        utilisation = mbps / capacity
        if utilisation <= self.soft:  # load_factor's 1: not held back (the usual case)
            return
        f = load_factor(utilisation, self.soft, self.hard)
        if f < 1.0:
            self.factors[mirror] = f
            if f == 0.0:
                self.stopped.add(mirror)
            else:
                self.stopped.discard(mirror)


NO_LOAD = LoadView({}, {})


def make_view(
    local: Mapping[str, float],
    others: Mapping[str, float],
    capacities: Mapping[str, int],
    soft: float = SOFT,
    hard: float = HARD,
    window: float = 60.0,
) -> LoadView:
    """Combine this dispatcher's estimate with the rest of the fleet's into multipliers."""
    total = {m: local.get(m, 0.0) + others.get(m, 0.0) for m in {*local, *others}}
    factors = {
        m: f
        for m, mbps in total.items()
        if m in capacities and (f := load_factor(mbps / capacities[m], soft, hard)) < 1.0
    }
    return LoadView(factors, total, capacities, window, soft, hard)


def weighted_pick(
    band_caps: Sequence[float],
    band_factors: Sequence[float],
    spill_caps: Sequence[float],
    spill_factors: Sequence[float],
    rng: random.Random,
) -> tuple[bool, int]:
    """Pick a band member (``(True, i)``) or a spill candidate (``(False, j)``).

    With every factor 1 this is exactly the plain capacity-weighted draw over the band (one
    ``rng.random()`` call). A held-back member keeps ``factor`` x its usual share; the share
    the held-back members lose (``1 - effective/nominal``) goes, while any band member is not
    held back (factor 1: room even after this file), to those members in proportion to
    their capacity: a near mirror with room is better than a farther one (see :func:`absorb`;
    the spill candidates are then not looked at, and may be empty). When every band member
    is held back, it goes to the spill candidates, weighted by their own effective capacity
    and halved at each step away from the band, so the nearest with room gets most. If no
    spill candidate has room either, the band takes it all at its effective weights (at its
    nominal ones when those are all 0): overload is shared, never turned into failures.
    (Selection calls :func:`overflow_pick` instead when every factor is 0.)
    """
    nominal = float(sum(band_caps))
    effective = [c * f for c, f in zip(band_caps, band_factors, strict=True)]
    eff_total = sum(effective)
    if eff_total >= nominal:
        return True, _draw(band_caps, rng.random() * nominal)
    if 1.0 in band_factors:
        weights = absorb(band_caps, band_factors, effective, nominal - eff_total)
        return True, _draw(weights, rng.random() * nominal)
    spill_weights = [
        c * f * SPILL_DECAY**k
        for k, (c, f) in enumerate(zip(spill_caps, spill_factors, strict=True))
    ]
    spill_total = sum(spill_weights)
    if spill_total <= 0:
        if eff_total <= 0:
            return True, _draw(band_caps, rng.random() * nominal)
        return True, _draw(effective, rng.random() * eff_total)
    u = rng.random()
    spill_share = 1.0 - eff_total / nominal
    if u < spill_share:
        return False, _draw(spill_weights, u / spill_share * spill_total)
    return True, _draw(effective, (u - spill_share) / (1.0 - spill_share) * eff_total)


def absorb(
    band_caps: Sequence[float],
    band_factors: Sequence[float],
    effective: Sequence[float],
    shed: float,
) -> list[float]:
    """Band weights (summing to the band's nominal capacity) when the held-back members'
    lost share ``shed`` goes to the members not held back (factor 1), by capacity. The
    caller makes sure there is at least one."""
    room = sum(c for c, f in zip(band_caps, band_factors, strict=True) if f == 1.0)
    scale = 1.0 + shed / room
    return [
        c * scale if f == 1.0 else e
        for c, f, e in zip(band_caps, band_factors, effective, strict=True)
    ]


def spare(load: LoadView, names: Sequence[str], nbytes: int) -> list[float]:
    """For each mirror, the Mbit/s it could still take before reaching its capacity once a
    file of ``nbytes`` is counted, or, where it would go over, minus its utilisation with
    the file (so the least overloaded has the largest value; :func:`least_utilised` finds
    it without this list)."""
    extra = nbytes * 8 / 1e6 / load.window
    capacities, mbps = load.capacities, load.mbps
    out = []
    for name in names:
        capacity = capacities.get(name)
        if not capacity:
            out.append(float("-inf"))
            continue
        used = mbps.get(name, 0.0) + extra
        out.append(capacity - used if used < capacity else -used / capacity)
    return out


def least_utilised(load: LoadView, names: Sequence[str], nbytes: int) -> int | None:
    """The index in ``names`` of the mirror a file of ``nbytes`` overloads least, for when it
    fits under 100 % on none of them: then the first largest value of :func:`spare` (minus
    the utilisation with the file), which :func:`overflow_pick` picks. None when one of
    them has no capacity in the view (the caller asks :func:`spare` instead)."""
    extra = nbytes * 8 / 1e6 / load.window
    capacities, mbps = load.capacities, load.mbps
    try:
        # Subscripts, not .get(): ~0.4 us less over a band and its spill candidates.
        used = [(mbps[name] + extra) / capacities[name] for name in names]
    except (KeyError, ZeroDivisionError):
        return None
    return used.index(min(used))


def overflow_pick(n_band: int, room: Sequence[float], rng: random.Random) -> tuple[bool, int]:
    """The pick when every band member and spill candidate is held back entirely (each is
    past the point where it takes no new traffic, judged with this file). ``room`` is
    :func:`spare` for the band's ``n_band`` members, then the spill candidates: the file
    goes where it still fits under 100 % of capacity, in proportion to the room left;
    where it fits nowhere, to the one it overloads least (never a failure). One
    ``rng.random()`` call either way.
    """
    best = max(room)
    if best > 0.0:
        fits = [r if r > 0.0 else 0.0 for r in room]
        k = _draw(fits, rng.random() * sum(fits))
    else:  # fits nowhere (the usual case in a saturated fleet): no list of zeros to sum
        rng.random()
        k = room.index(best)  # the first largest
    return (True, k) if k < n_band else (False, k - n_band)


def further_weights(
    caps: Sequence[float], factors: Sequence[float], room: Sequence[float]
) -> list[float]:
    """Weights for the mirrors past the spill candidates, nearest first, when the file fits
    under 100 % on no band member and no spill candidate (selection then draws among these
    instead of overloading one of those). Each has room for the file (``room``, from
    :func:`spare`, > 0). As for the spill candidates: by effective capacity, halved at each
    step, so the nearest not held back gets most; when all are held back entirely (between
    the hold-back limit and 100 %), by the room left, as :func:`overflow_pick` does.
    """
    weights = [c * f * SPILL_DECAY**k for k, (c, f) in enumerate(zip(caps, factors, strict=True))]
    return weights if sum(weights) > 0.0 else list(room)


def _draw(weights: Sequence[float], point: float) -> int:
    acc = 0.0
    for i, w in enumerate(weights):
        acc += w
        if point < acc:
            return i
    return len(weights) - 1


# --- for display: the mirror list, the status page, the JSON views and the API -------------


@dataclass(frozen=True, slots=True)
class MirrorLoad:
    """One mirror's estimated load against its capacity, as the pages and JSON show it.

    ``mbps`` is the fleet-wide sliding-window estimate of what the dispatchers sent the
    mirror (not a measurement at the mirror); ``factor`` is the weight multiplier selection
    currently applies (1 = not held back).
    """

    mbps: float
    capacity: int
    factor: float = 1.0

    @property
    def utilisation(self) -> float:
        """Estimated load / capacity (0 without a capacity); may pass 1 in a burst."""
        return self.mbps / self.capacity if self.capacity > 0 else 0.0

    @property
    def held_back(self) -> bool:
        return self.factor < 1.0

    @property
    def percent(self) -> str:
        """``41 %``; ``<1 %`` for a load that is not zero but rounds to it."""
        p = self.utilisation * 100
        return "<1 %" if 0 < p < 0.5 else f"{p:,.0f} %"

    @property
    def text(self) -> str:
        """``412 / 1,000 Mbit/s (41 %)``."""
        return f"{format_mbps(self.mbps)} / {self.capacity:,} Mbit/s ({self.percent})"

    @property
    def held_back_text(self) -> str:
        """Why and how much the mirror is held back; empty when it is not."""
        if not self.held_back:
            return ""
        if self.factor <= 0:
            return "at capacity: gets no new downloads until its load drops"
        share = min(99, max(1, round(self.factor * 100)))  # never "100 %" while held back
        return f"near capacity: gets {share} % of its usual share of new downloads"

    def to_json(self) -> dict[str, float | int | bool]:
        return {
            "mbps": round(float(self.mbps), 1),
            "capacity_mbps": self.capacity,
            "utilisation": round(float(self.utilisation), 4),
            "factor": round(float(self.factor), 4),
            "held_back": self.held_back,
        }


def format_mbps(mbps: float) -> str:
    """``0``, ``<0.1``, ``7.5``, ``412``, ``1,250``: a decimal only where it says something."""
    if mbps <= 0:
        return "0"
    if mbps < 0.05:
        return "<0.1"
    if mbps < 9.95:
        return f"{mbps:.1f}"
    return f"{mbps:,.0f}"


def mirror_load(view: LoadView | None, name: str, capacity: int) -> MirrorLoad:
    """The load to show for one mirror; 0 / capacity when there is no estimate (yet)."""
    if view is None:
        return MirrorLoad(0.0, capacity)
    return MirrorLoad(max(0.0, view.mbps.get(name, 0.0)), capacity, view.factor(name))
