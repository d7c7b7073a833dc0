"""Capacity-aware distribution: the estimator, the factor curve and the weighted pick."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from types import SimpleNamespace
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrorhub.domain import (
    Client,
    Health,
    Location,
    Mirror,
    MirrorState,
    Options,
    OriginFile,
    Reason,
    Restrictions,
    Tier,
)
from mirrorhub.index import Index, IndexConfig, IndexSource, build_index
from mirrorhub.load import (
    LoadEstimator,
    LoadView,
    absorb,
    further_weights,
    least_utilised,
    load_factor,
    make_view,
    overflow_pick,
    spare,
    weighted_pick,
)
from mirrorhub.selection import Band, FileFacts, choose, make_slot, rank_mirrors
from mirrorhub.web import loadsync


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_estimator_sums_a_sliding_window() -> None:
    clock = Clock()
    est = LoadEstimator(window=60, step=5, clock=clock)
    est.add("a", 75_000_000)  # 600 Mbit over 60 s = 10 Mbit/s
    assert est.mbps()["a"] == pytest.approx(10.0)
    clock.t += 30
    est.add("a", 75_000_000)
    assert est.mbps()["a"] == pytest.approx(20.0)
    clock.t += 35  # the first addition left the window
    assert est.mbps()["a"] == pytest.approx(10.0)
    clock.t += 600
    assert est.mbps()["a"] == 0.0


def test_estimator_counts_a_late_addition_in_its_own_step() -> None:
    clock = Clock()
    est = LoadEstimator(window=60, step=5, clock=clock)
    clock.t += 10
    est.add("a", 75_000_000)
    est.add("b", 75_000_000, at=clock.t - 9)  # bytes of an earlier step, counted late
    assert est.mbps() == pytest.approx({"a": 10.0, "b": 10.0})  # nothing was cleared
    clock.t += 51  # b's step left the window, a's not yet
    assert est.mbps() == pytest.approx({"a": 10.0, "b": 0.0})
    est.add("a", 75_000_000, at=clock.t - 61)  # older than the window: dropped
    assert est.mbps()["a"] == pytest.approx(10.0)


@pytest.mark.parametrize(("u", "f"), [(0.0, 1.0), (0.9, 1.0), (0.94, 0.5), (0.98, 0.0), (3.0, 0.0)])
def test_load_factor_curve(u: float, f: float) -> None:
    assert load_factor(u) == pytest.approx(f)  # defaults: soft 0.9, hard 0.98
    assert load_factor(0.9, soft=0.8, hard=1.0) == pytest.approx(0.5)


def test_a_large_file_is_judged_on_the_load_after_it() -> None:
    view = make_view({"a": 850.0}, {}, {"a": 1000})  # 85 %: not held back yet
    assert view.factor("a") == 1.0 and "a" in view.warm
    assert view.factor_for("a", 1_000_000) == 1.0  # +0.13 Mbit/s: still fine
    assert view.factor_for("a", 2_000_000_000) == 0.0  # +267 Mbit/s would pass the limit


def test_fleet_view_adds_other_dispatchers() -> None:
    view = make_view({"a": 500.0}, {"a": 450.0, "b": 10.0}, {"a": 1000, "b": 1000})
    assert view.mbps == {"a": 950.0, "b": 10.0}
    assert view.factor("a") == pytest.approx(0.375) and view.factor("b") == 1.0


def test_no_load_is_the_plain_capacity_draw() -> None:
    for seed in range(50):
        a = weighted_pick([1, 3], [1, 1], [5], [1], random.Random(seed))
        b = weighted_pick([1, 3], [1, 1], [], [], random.Random(seed))
        assert a == b and a[0]


MIRRORS = [
    Mirror(1, "near", "http://near/", None, country="DE", continent="EU", latitude=52.5, longitude=13.4, capacity=100),
    Mirror(2, "near2", "http://near2/", None, country="DE", continent="EU", latitude=52.4, longitude=13.3, capacity=100),
    Mirror(3, "mid", "http://mid/", None, country="FR", continent="EU", latitude=48.9, longitude=2.3, capacity=1000),
    Mirror(4, "far", "http://far/", None, country="US", continent="NA", latitude=40.7, longitude=-74.0, capacity=1000),
    Mirror(5, "de-only", "http://deo/", None, country="AT", continent="EU", latitude=48.2, longitude=16.4,
           capacity=1000, restrictions=Restrictions(only_own_country=True)),
]  # fmt: skip
FILE = OriginFile("x.iso", 10, 1, None, 1.0)
CLIENT = Client(ipaddress.ip_address("192.0.2.1"), Location("DE", "EU", 52.5, 13.4))


def shares(load: LoadView | None, draws: int = 4000) -> Counter[str]:
    slots = [
        make_slot(i, m, MirrorState(Health.UP, last_good_scan=10.0), None)
        for i, m in enumerate(MIRRORS)
    ]
    profile = rank_mirrors(slots, CLIENT, Options(), frozenset())
    rng = random.Random(5)
    out: Counter[str] = Counter()
    for _ in range(draws):
        d = choose(profile, FileFacts(FILE, None), "x.iso", rng, band=Band(1.5, 50), alternates=2,
                   full=False, client=CLIENT, options=Options(), load=load)  # fmt: skip
        assert d.chosen is not None
        out[d.chosen.mirror.name] += 1
    return out


def test_a_mirror_at_capacity_gets_nothing_while_others_have_room() -> None:
    load = LoadView({"near": 0.0}, {})
    got = shares(load)
    assert got["near"] == 0 and got["near2"] > 0


def test_a_full_band_spills_to_the_next_best_nearest_first_and_honours_restrictions() -> None:
    load = LoadView({"near": 0.0, "near2": 0.0}, {})
    got = shares(load)
    assert got["near"] == got["near2"] == 0
    assert got["mid"] > got["far"] > 0  # nearest first, but both used
    assert got["de-only"] == 0  # its restriction still holds under spill-over


def test_a_half_held_band_sheds_half_its_traffic() -> None:
    got = shares(LoadView({"near": 0.5, "near2": 0.5}, {}))
    band = got["near"] + got["near2"]
    assert abs(band / 4000 - 0.5) < 0.05


def test_weights_recover_when_load_drops() -> None:
    held = shares(LoadView({"near": 0.0, "near2": 0.0}, {}))
    free = shares(LoadView({}, {}))
    assert held["near"] == 0 and free["near"] > 1500 and free["mid"] == 0


def test_shares_in_the_decision_follow_the_load() -> None:
    slots = [
        make_slot(i, m, MirrorState(Health.UP, last_good_scan=10.0), None)
        for i, m in enumerate(MIRRORS)
    ]
    profile = rank_mirrors(slots, CLIENT, Options(), frozenset())
    d = choose(profile, FileFacts(FILE, None), "x.iso", random.Random(1), band=Band(1.5, 50), alternates=2,
               full=True, client=CLIENT, options=Options(), load=LoadView({"near": 0.0, "near2": 0.0}, {}))  # fmt: skip
    share = {c.mirror.name: c.share for c in d.ranked}
    assert share["near"] == 0 and share["near2"] == 0
    assert share["mid"] == pytest.approx(2 / 3) and share["far"] == pytest.approx(1 / 3)
    assert sum(share.values()) == pytest.approx(1.0)
    assert {c.tier for c in d.ranked if c.mirror.name == "far"} == {Tier.WORLD}


def test_everything_full_still_answers() -> None:
    load = LoadView({m.name: 0.0 for m in MIRRORS}, {})
    got = shares(load, 500)
    assert sum(got.values()) == 500 and got["de-only"] == 0


async def test_sync_runs_at_start_and_keeps_own_redirects_made_while_it_awaited(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first sync runs on start-up, not one interval later; and the view it swaps in
    holds this dispatcher's traffic up to the swap, including redirects recorded while the
    exchange waited for the database (they went into the old view, which the swap drops)."""
    clock = Clock()
    est = LoadEstimator(window=10, step=1, clock=clock)
    est.add("a", 1_250_000)  # 1 Mbit/s over 10 s
    calls: list[Mapping[str, float]] = []

    async def exchange(
        sessions: object, process: str, local: Mapping[str, float], now: float, interval: float
    ) -> dict[str, float]:
        calls.append(dict(local))
        await asyncio.sleep(0)
        est.add("a", 2_500_000)  # +2 Mbit/s redirected during the round trip
        return {"a": 0.5}  # the other dispatchers

    monkeypatch.setattr(loadsync, "exchange", exchange)
    slot = SimpleNamespace(mirror=SimpleNamespace(name="a", capacity=3))
    state: Any = SimpleNamespace(
        settings=SimpleNamespace(load_sync_seconds=3600.0),
        sessions=None,
        clock=clock,
        holder=SimpleNamespace(current=SimpleNamespace(slots=[slot])),
        extras={},
    )
    recorder = loadsync.LoadRecorder(state, est)
    task = asyncio.create_task(loadsync._sync_loop(state, est, recorder, "me"))
    try:
        for _ in range(200):
            if "load_view" in state.extras:
                break
            await asyncio.sleep(0.005)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert calls == [{"a": pytest.approx(1.0)}]  # what was published
    view = cast(LoadView, state.extras["load_view"])
    assert view is recorder.view
    assert view.mbps["a"] == pytest.approx(1.0 + 2.0 + 0.5)
    assert view.factor("a") == 0.0  # 3.5 of 3 Mbit/s: full (1.5 would have looked free)


def test_a_file_no_candidate_takes_goes_where_it_still_fits() -> None:
    """Every band member and spill candidate is held back entirely: the file goes only to
    mirrors where it fits under 100 %, in proportion to the room left."""
    view = LoadView(
        {},
        {"near": 990.0, "big": 9_980.0, "room": 900.0},
        {"near": 1000, "big": 10_000, "room": 1000},
    )
    size = int(50 * 1e6 / 8 * 60)  # 50 Mbit/s over the 60 s window
    room = spare(view, ["near", "big", "room"], size)
    assert room[2] == pytest.approx(50.0) and room[0] < 0 and room[1] < 0
    picks = {overflow_pick(2, room, random.Random(seed)) for seed in range(50)}
    assert picks == {(False, 0)}  # the spill candidate with room, every time


def test_a_file_that_fits_nowhere_goes_to_the_least_overloaded() -> None:
    view = LoadView({}, {"a": 990.0, "b": 9_950.0}, {"a": 1000, "b": 10_000})
    size = int(100 * 1e6 / 8 * 60)  # 100 Mbit/s: a would reach 109 %, b 100.5 %
    room = spare(view, ["a", "b"], size)
    assert all(r <= 0 for r in room)
    assert overflow_pick(2, room, random.Random(1)) == (True, 1)


@given(
    st.lists(st.tuples(st.integers(1, 100_000), st.floats(1.0, 5.0)), min_size=1, max_size=16),
    st.integers(0, 10**11),
)
def test_least_utilised_is_the_overflow_pick_where_nothing_fits(
    mirrors: list[tuple[int, float]], size: int
) -> None:
    """Every mirror at or past its capacity before the file: the same mirror as the first
    largest value of spare(), which overflow_pick takes, ties included."""
    names = [f"m{k}" for k in range(len(mirrors))]
    caps = {n: c for n, (c, _) in zip(names, mirrors, strict=True)}
    mbps = {n: c * u for n, (c, u) in zip(names, mirrors, strict=True)}
    view = LoadView({}, mbps, caps)
    room = spare(view, names, size)
    assert max(room) <= 0.0
    assert least_utilised(view, names, size) == room.index(max(room))


def test_least_utilised_leaves_a_mirror_without_capacity_to_spare() -> None:
    view = LoadView({}, {"a": 2000.0, "b": 3000.0}, {"a": 1000})
    assert least_utilised(view, ["a", "b"], 0) is None
    assert spare(view, ["a", "b"], 0) == [-2.0, float("-inf")]


def test_what_a_held_back_member_sheds_goes_to_band_members_with_room_first() -> None:
    """near keeps half its usual share (factor 0.5); the other half goes to near2, in the
    same band with room, not to the farther spill candidates."""
    got = shares(LoadView({"near": 0.5}, {}))
    assert got["mid"] == got["far"] == got["de-only"] == 0
    assert abs(got["near"] / 4000 - 0.25) < 0.03 and abs(got["near2"] / 4000 - 0.75) < 0.03


def test_decision_shares_with_a_band_member_held_back() -> None:
    slots = [
        make_slot(i, m, MirrorState(Health.UP, last_good_scan=10.0), None)
        for i, m in enumerate(MIRRORS)
    ]
    profile = rank_mirrors(slots, CLIENT, Options(), frozenset())
    d = choose(profile, FileFacts(FILE, None), "x.iso", random.Random(1), band=Band(1.5, 50), alternates=2,
               full=True, client=CLIENT, options=Options(), load=LoadView({"near": 0.5}, {}))  # fmt: skip
    share = {c.mirror.name: c.share for c in d.ranked}
    assert share["near"] == pytest.approx(0.25) and share["near2"] == pytest.approx(0.75)
    assert share["mid"] == share["far"] == 0


def test_absorbing_weights_keep_the_band_total_and_one_draw() -> None:
    caps, factors = [100.0, 300.0, 600.0], [0.25, 1.0, 1.0]
    weights = absorb(caps, factors, [c * f for c, f in zip(caps, factors, strict=True)], 75.0)
    assert weights == pytest.approx([25.0, 325.0, 650.0]) and sum(weights) == pytest.approx(1000)
    rng, twin = random.Random(3), random.Random(3)
    weighted_pick(caps, factors, [], [], rng)
    twin.random()
    assert rng.random() == twin.random()  # exactly one draw, as without load


GB2 = 2_000_000_000  # 267 Mbit/s over a 60 s window
MB5 = 5_000_000


def picks(view: LoadView, size: int, draws: int = 2000) -> Counter[str]:
    """Like shares(), for one file size, and without feeding the picks back into the view."""
    slots = [
        make_slot(i, m, MirrorState(Health.UP, last_good_scan=10.0), None)
        for i, m in enumerate(MIRRORS)
    ]
    profile = rank_mirrors(slots, CLIENT, Options(), frozenset())
    facts = FileFacts(OriginFile("x.iso", size, 1, None, 1.0), None)
    rng = random.Random(11)
    out: Counter[str] = Counter()
    for _ in range(draws):
        d = choose(profile, facts, "x.iso", rng, band=Band(1.5, 50), alternates=2,
                   full=False, client=CLIENT, options=Options(), load=view)  # fmt: skip
        assert d.chosen is not None
        out[d.chosen.mirror.name] += 1
    return out


def test_per_file_size_hold_back_and_recovery_with_an_injected_clock() -> None:
    """A mirror with room for a small file but not for a large one gets small files at its
    usual share and no large ones, which go to its band peer with room (not farther); when
    its traffic leaves the window, it gets large files again."""
    caps = {m.name: m.capacity * 10 for m in MIRRORS}  # near, near2: 1,000 Mbit/s
    clock = Clock()
    est = LoadEstimator(window=60, step=1, clock=clock)
    est.add("near", 3 * GB2)  # 800 Mbit/s: 80 %; + one 2 GB file would be 107 %
    view = make_view(est.mbps(), {}, caps)
    assert view.factor("near") == 1.0 and view.factor_for("near", GB2) == 0.0
    small, large = picks(view, MB5), picks(view, GB2)
    assert abs(small["near"] / 2000 - 0.5) < 0.05 and small["mid"] == 0
    assert large["near"] == 0 and large["near2"] == 2000
    clock.t += 61  # the 6 GB left the window; the next sync rebuilds the view
    view = make_view(est.mbps(), {}, caps)
    assert view.factor_for("near", GB2) == 1.0
    large = picks(view, GB2)
    assert abs(large["near"] / 2000 - 0.5) < 0.05


def test_a_band_at_capacity_spills_past_its_tier_only_to_allowed_mirrors() -> None:
    """Both band members full for this file (judged on the load after it): it goes to the
    spill candidates, never to the restricted mirror, and the band gets nothing."""
    caps = {m.name: m.capacity * 10 for m in MIRRORS}
    view = make_view({"near": 900.0, "near2": 900.0}, {}, caps)
    got = picks(view, GB2)
    assert got["near"] == got["near2"] == got["de-only"] == 0
    assert got["mid"] > got["far"] > 0


# --- Past the spill candidates: a file that fits nowhere near the client ---------------------

BERLIN = Client(ipaddress.ip_address("192.0.2.1"), Location("DE", "EU", 52.5, 13.4))
SCANNED = MirrorState(Health.UP, last_good_scan=20.0)
NEAR = [  # the band (two in Berlin), then the 8 spill candidates: nearest in the same continent
    ("de1", "DE", "EU", 52.5, 13.4), ("de2", "DE", "EU", 52.6, 13.3),
    ("cz", "CZ", "EU", 50.1, 14.4), ("dk", "DK", "EU", 55.7, 12.6),
    ("pl", "PL", "EU", 52.2, 21.0), ("at", "AT", "EU", 48.2, 16.4),
    ("nl", "NL", "EU", 52.4, 4.9), ("be", "BE", "EU", 50.8, 4.4),
    ("ch", "CH", "EU", 46.9, 7.4), ("fr", "FR", "EU", 48.9, 2.3),
]  # fmt: skip


def eu_index(
    *further: tuple[Mirror, MirrorState],
    missing: str | None = None,
    outdated: Sequence[str] = (),
) -> Index:
    """One 2 GB file (267 Mbit/s over the 60 s window), a client in Berlin: the band and its
    spill candidates from NEAR, then ``further`` (ranked by tier and distance as usual).
    ``missing`` names a mirror that lacks the file, ``outdated`` those with an older
    version (which may serve for an hour after the origin's change, when nobody has it)."""
    mirrors = [
        (Mirror(i, name, f"http://{name}/", None, country=cc, continent=cont, latitude=lat,
                longitude=lon, capacity=1000), SCANNED)
        for i, (name, cc, cont, lat, lon) in enumerate(NEAR, start=1)
    ]  # fmt: skip
    mirrors += [(dataclasses.replace(m, id=100 + i), s) for i, (m, s) in enumerate(further)]
    ids = {m.name: m.id for m, _ in mirrors}
    lacking = [(ids[missing], 1)] if missing else []
    diffs = lacking + [(ids[name], 1) for name in outdated]
    files = [(1, "pub/x.iso", GB2, 1, None, 10.0)]
    source = IndexSource(1, mirrors, files, diffs, lacking)
    config = IndexConfig(Band(1.5, 500), alternates=2, allow_outdated=(("pub/", 3600.0),))
    return build_index(source, config)


def far(name: str, cc: str, cont: str, lat: float, lon: float, **kw: Any) -> Mirror:
    return Mirror(0, name, f"http://{name}/", None, country=cc, continent=cont, latitude=lat,
                  longitude=lon, capacity=1000, **kw)  # fmt: skip


def full_near(index: Index, **mbps: float) -> LoadView:
    """Every band member and spill candidate at 90 %: a 2 GB file takes each to 117 %."""
    caps = {s.mirror.name: s.mirror.capacity for s in index.slots}
    return make_view({**{name: 900.0 for name, *_ in NEAR}, **mbps}, {}, caps)


def chosen(index: Index, view: LoadView, seeds: range = range(200)) -> Counter[str]:
    """The mirror chosen per seed by the full decision, checked against the hot path's."""
    profile = index.profile(BERLIN, Options())
    out: Counter[str] = Counter()
    for seed in seeds:
        rng = random.Random(seed)
        d = index.decide(0, BERLIN, Options(), rng, full=False, now=100.0, load=view)
        fast = index.fast_pick(0, profile, random.Random(seed), 100.0, view)
        assert d.chosen is not None and fast is not None
        assert [profile.mirror_names[i] for i in fast[0]] == [c.mirror.name for c in d.ranked]
        assert fast[1] == d.chosen.maybe_outdated
        out[d.chosen.mirror.name] += 1
    return out


def test_a_file_that_fits_nowhere_near_goes_to_a_fresh_allowed_mirror_further_away() -> None:
    """Band and spill candidates would all pass 100 % with the file; the mirrors past them
    with room are restricted, stale, missing the file, out of scope or down, except one."""
    index = eu_index(
        (far("it", "IT", "EU", 41.9, 12.5, restrictions=Restrictions(only_own_country=True)),
         SCANNED),
        (far("es", "ES", "EU", 40.4, -3.7), MirrorState(Health.UP, last_good_scan=5.0)),
        (far("pt", "PT", "EU", 38.7, -9.1), SCANNED),
        (far("se", "SE", "EU", 59.3, 18.1, scope=("other/",)), SCANNED),
        (far("no", "NO", "EU", 59.9, 10.7), MirrorState(Health.DOWN, last_good_scan=20.0)),
        (far("us", "US", "NA", 40.7, -74.0), SCANNED),
        missing="pt",
    )  # fmt: skip
    view = full_near(index)
    assert view.below_capacity == {s.mirror.name for s in index.slots}  # < 100 % before it
    assert chosen(index, view) == {"us": 200}
    d = index.decide(0, BERLIN, Options(), random.Random(1), full=True, load=view)
    assert {e.mirror.name: e.reason for e in d.excluded} == {
        "it": Reason.NOT_OWN_COUNTRY, "es": Reason.STALE, "pt": Reason.MISSING,
        "se": Reason.OUT_OF_SCOPE, "no": Reason.DOWN,
    }  # fmt: skip
    assert {c.mirror.name: c.share for c in d.ranked if c.share} == {"us": 1.0}


def test_past_the_spill_candidates_the_ranking_still_decides_nearest_tier_first() -> None:
    """Lisbon (same continent) ranks before Tunis (closer to Berlin, another continent) and
    gets twice its weight, as a spill candidate one step nearer would."""
    index = eu_index(
        (far("lisbon", "PT", "EU", 38.7, -9.1), SCANNED),
        (far("tunis", "TN", "AF", 36.8, 10.2), SCANNED),
    )
    view = full_near(index)
    d = index.decide(0, BERLIN, Options(), random.Random(1), full=True, load=view)
    shares = {c.mirror.name: c.share for c in d.ranked if c.share}
    assert shares == pytest.approx({"lisbon": 2 / 3, "tunis": 1 / 3})
    got = chosen(index, view, range(600))
    assert set(got) == {"lisbon", "tunis"} and 350 < got["lisbon"] < 450


def test_past_the_spill_candidates_at_most_eight_mirrors_share_the_file() -> None:
    """Ten US mirrors with room, nearest first: the first eight share the file, halving per
    step; the ninth, however big, gets nothing (the hot path stops looking there too)."""
    us = [(far(f"us{k}", "US", "NA", 40.7, -74.0 - k), SCANNED) for k in range(10)]
    us[8] = (dataclasses.replace(us[8][0], capacity=100_000), SCANNED)
    index = eu_index(*us)
    view = full_near(index)
    d = index.decide(0, BERLIN, Options(), random.Random(1), full=True, load=view)
    shares = {c.mirror.name: c.share for c in d.ranked if c.mirror.name.startswith("us")}
    weights = [0.5**k for k in range(8)]
    assert shares == pytest.approx(
        {**{f"us{k}": w / sum(weights) for k, w in enumerate(weights)}, "us8": 0, "us9": 0}
    )
    assert set(chosen(index, view)) <= {f"us{k}" for k in range(8)}


def test_the_allow_outdated_pass_looks_past_the_spill_candidates_by_its_own_rules() -> None:
    """No mirror has the current version; an outdated copy may serve. Band and spill
    candidates (all outdated) are full: an outdated mirror further away takes the file, one
    that lacks it entirely does not, and the answer says it may be outdated."""
    index = eu_index(
        (far("pt", "PT", "EU", 38.7, -9.1), SCANNED),
        (far("us", "US", "NA", 40.7, -74.0), SCANNED),
        missing="pt",
        outdated=[name for name, *_ in NEAR] + ["us"],
    )
    view = full_near(index)
    assert chosen(index, view) == {"us": 200}
    d = index.decide(0, BERLIN, Options(), random.Random(1), full=False, now=100.0, load=view)
    assert d.chosen is not None and d.chosen.maybe_outdated


def test_a_spill_candidate_where_the_file_still_fits_keeps_it_near() -> None:
    """Only when the file fits under 100 % on no band member and no spill candidate are the
    mirrors past them looked at: one at 72 % (99 % with the file) takes it before the US."""
    index = eu_index((far("us", "US", "NA", 40.7, -74.0), SCANNED))
    view = full_near(index, fr=720.0)
    assert view.factor_for("fr", GB2) == 0.0  # held back entirely, but still fits
    assert chosen(index, view) == {"fr": 200}


def test_a_saturated_fleet_keeps_the_overflow_pick_among_band_and_spill() -> None:
    """Nothing the client may use has room (the only mirrors below capacity are down or
    restricted, or none is): the least overloaded of band and spill candidates, exactly as
    overflow_pick picks it, with one draw."""
    index = eu_index(
        (far("it", "IT", "EU", 41.9, 12.5, restrictions=Restrictions(only_own_country=True)),
         SCANNED),
        (far("no", "NO", "EU", 59.9, 10.7), MirrorState(Health.DOWN, last_good_scan=20.0)),
        (far("us", "US", "NA", 40.7, -74.0), SCANNED),
    )  # fmt: skip
    near = [name for name, *_ in NEAR]
    loads = {name: 900.0 + 10 * k for k, name in enumerate(near)}  # "fr" least loaded
    for view in (
        full_near(index, **loads, us=1000.0),  # it and no below capacity
        full_near(index, **loads, us=1000.0, it=1000.0, no=1000.0),  # nobody
    ):
        for seed in range(20):
            room = spare(view, near, GB2)
            in_band, k = overflow_pick(2, room, random.Random(seed))
            expected = near[k] if in_band else near[2 + k]
            assert chosen(index, view, range(seed, seed + 1)) == {expected: 1} == {"de1": 1}
            rng, twin = random.Random(seed), random.Random(seed)
            index.decide(0, BERLIN, Options(), rng, full=False, load=view)
            twin.random()
            assert rng.random() == twin.random()
    # Below 100 % before the file: the band, the spill candidates (room for smaller files),
    # and past them only mirrors this client may not use.
    assert full_near(index, **loads, us=1000.0).below_capacity == {*near, "it", "no"}
    # The next sync's view has room in the US again: the same ranking sees it at once.
    assert chosen(index, full_near(index, **loads), range(20)) == {"us": 20}


def test_below_capacity_only_shrinks_within_a_view() -> None:
    view = make_view({"a": 990.0, "b": 100.0}, {"c": 1000.0}, {"a": 1000, "b": 1000, "c": 1000})
    assert view.below_capacity == {"a", "b"}  # c is at 100 %: no room for any file
    view.add("a", int(10 * 1e6 / 8 * 60))  # +10 Mbit/s: 100 %
    assert view.below_capacity == {"b"}
    assert LoadView({"a": 0.0}, {}).below_capacity == set()  # no capacities: nothing known


def test_further_weights_halve_per_step_else_follow_the_room() -> None:
    caps, room = [1000.0, 1000.0, 4000.0], [100.0, 300.0, 50.0]
    assert further_weights(caps, [1.0, 1.0, 0.5], room) == [1000.0, 500.0, 500.0]
    assert further_weights(caps, [0.0, 1.0, 0.0], room) == [0.0, 500.0, 0.0]
    assert further_weights(caps, [0.0, 0.0, 0.0], room) == room  # all held back: by room


def test_the_stopped_set_follows_the_factors_through_every_add() -> None:
    """``LoadView.stopped`` (held back entirely) is what selection tests a band against
    instead of computing factors: it must always be the mirrors whose factor is 0."""
    rng = random.Random(5)
    for _ in range(200):
        names = [f"m{i}" for i in range(6)]
        capacities = {n: rng.choice([10, 100, 1000]) for n in names}  # > 0, as the schema
        mbps = {n: rng.uniform(0, 1.3) * c for n, c in capacities.items()}
        if rng.random() < 0.5:
            view = make_view(mbps, {}, capacities)
        else:  # factors that need not follow from the traffic (a view made by hand)
            factors = {n: rng.choice([0.0, 0.0, 0.5]) for n in names if rng.random() < 0.5}
            view = LoadView(factors, {n: v / 4 for n, v in mbps.items()}, capacities)
        for _ in range(30):
            assert view.stopped == {m for m, f in view.factors.items() if f == 0.0}
            view.add(rng.choice(names), rng.choice([10**6, 10**8, 5 * 10**8]))
        assert view.stopped == {m for m, f in view.factors.items() if f == 0.0}
    assert view.stopped  # the seeded runs do reach mirrors held back entirely
