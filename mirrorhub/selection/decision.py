"""The full decision for one file: :func:`choose`, which every view renders.

It walks a :class:`~mirrorhub.selection.ranking.Profile` for one file, skips mirrors that are
not fresh for it, forms the band of near mirrors within the best tier, and picks one at
random weighted by capacity and held back by load. The same function makes the 302
(``full=False``: stops once it has enough) and the mirror list / JSON views (``full=True``:
every mirror classified, with its reason). The hot path makes the same choice without
building objects (:mod:`mirrorhub.selection.fast_path`).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mirrorhub.domain import Candidate, Client, Decision, Exclusion, Options, Reason, Tier
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
from mirrorhub.selection.ranking import (
    FURTHER_CANDIDATES,
    SPILL_CANDIDATES,
    Band,
    FileFacts,
    Profile,
    Ranked,
    file_reason,
    within_band,
)

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
    walked = profile.ranked  # made on each call: the same objects for identity tests below
    spill_end = len(walked)  # position of the last spill candidate
    for pos, r in enumerate(walked):
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
        if not band_closed and r.tier == best_tier and within_band(r.distance, band_limit):
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
                further = _further(walked, spill_end + 1, facts, confirmations, tolerate, load)
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
    ranked: Sequence[Ranked],
    start: int,
    facts: FileFacts,
    confirmations: dict[int, float] | None,
    tolerate: bool,
    load: LoadView,
) -> list[Ranked]:
    """Up to FURTHER_CANDIDATES mirrors from ``ranked[start]`` on, nearest first,
    that hold the file (by the same rules as the band) and have room for it under 100 %."""
    found: list[Ranked] = []
    for r in ranked[start:]:
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
    """Each mirror's share of this file's traffic under :func:`~mirrorhub.load.weighted_pick`."""
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
