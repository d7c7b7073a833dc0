"""The hot path's fast_pick makes exactly the choice of the full decide()."""

from __future__ import annotations

import dataclasses
import gc
import ipaddress
import random
from array import array
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mirrorhub.domain import (
    Client,
    Health,
    Location,
    Mirror,
    MirrorState,
    Options,
    Restrictions,
    Scheme,
)
from mirrorhub.index import Index, IndexConfig, IndexSource, build_index
from mirrorhub.load import LoadView, make_view
from mirrorhub.selection import Band, fast_path
from mirrorhub.selection.fast_path import FastBand
from mirrorhub.selection.ranking import Profile

COUNTRIES = [
    ("DE", "EU", 52.5, 13.4),
    ("FR", "EU", 48.9, 2.3),
    ("US", "NA", 40.7, -74.0),
    ("JP", "AS", 35.7, 139.7),
]


@st.composite
def worlds(draw: st.DrawFn) -> tuple[IndexSource, IndexConfig]:
    n_mirrors = draw(st.integers(1, 12))
    mirrors = []
    for i in range(1, n_mirrors + 1):
        cc, cont, lat, lon = draw(st.sampled_from(COUNTRIES))
        jitter = draw(st.floats(-3, 3))
        mirror = Mirror(
            id=i,
            name=f"m{i}",
            http_url=draw(st.sampled_from([f"http://m{i}.example/", None])),
            https_url=f"https://m{i}.example/p/",
            country=cc,
            continent=cont,
            latitude=draw(st.sampled_from([lat + jitter, None])),
            longitude=lon + jitter,
            asn=draw(st.sampled_from([None, 64500, 64501])),
            networks=draw(st.sampled_from([(), (ipaddress.ip_network("192.0.2.0/24"),)])),
            capacity=draw(st.integers(1, 5000)),
            enabled=draw(st.booleans()) or draw(st.booleans()),
            restrictions=Restrictions(only_own_country=draw(st.booleans()) and draw(st.booleans())),
            scope=draw(st.sampled_from([(), ("a/",), ("b/",)])),
        )
        state = MirrorState(
            health=draw(st.sampled_from([Health.UP, Health.UP, Health.UNKNOWN, Health.DOWN])),
            last_good_scan=draw(st.sampled_from([100.0, 200.0, 300.0])),
        )
        mirrors.append((mirror, state))
    files = [(f, f"{d}/f{f}.iso", 10_000, 1, None, float(draw(st.sampled_from([50, 150, 250]))))
             for f, d in enumerate(["a", "b", "a", "c"], start=1)]  # fmt: skip
    diffs = draw(
        st.lists(st.tuples(st.integers(1, n_mirrors), st.integers(1, 4)), unique=True, max_size=15)
    )
    missing = [d for d in diffs if draw(st.booleans())]
    confirmations = draw(
        st.lists(
            st.tuples(
                st.integers(1, n_mirrors), st.integers(1, 4), st.sampled_from([100.0, 260.0])
            ),
            max_size=5,
        )
    )
    outdated_window = draw(st.sampled_from([(), (("a/", 100.0),)]))
    config = IndexConfig(
        Band(1.5, draw(st.sampled_from([0.0, 500.0]))),
        draw(st.integers(0, 4)),
        0,
        (),
        outdated_window,
    )
    return IndexSource(1, mirrors, files, diffs, missing, confirmations), config


@settings(max_examples=300, deadline=None)
@given(
    worlds(),
    st.sampled_from(["192.0.2.7", "198.51.100.1"]),
    st.sampled_from([*COUNTRIES, (None, None, None, None)]),
    st.sampled_from(
        [
            Options(),
            Options(scheme=Scheme.HTTPS),
            Options(country="JP"),
            Options(avoid=frozenset({"DE"})),
        ]
    ),
    st.integers(0, 2**32),
    st.sampled_from([240.0, 2000.0]),
    st.dictionaries(
        st.sampled_from([f"m{i}" for i in range(1, 13)]),
        st.sampled_from([0.0, 0.3, 0.9]),
        max_size=8,
    ),
)
def test_fast_pick_equals_decide(world, address, where, options, seed, now, factors) -> None:  # type: ignore[no-untyped-def]
    source, config = world
    load = LoadView(factors, {}) if factors else None
    index = build_index(source, config)
    cc, cont, lat, lon = where
    client = Client(ipaddress.ip_address(address), Location(cc, cont, lat, lon, 64500))
    profile = index.profile(client, options)
    for pos in range(len(index)):
        full_rng, fast_rng = random.Random(seed), random.Random(seed)
        full = index.decide(pos, client, options, full_rng, full=False, now=now, load=load)
        fast = index.fast_pick(pos, profile, fast_rng, now, load)
        assert fast_rng.random() == full_rng.random()  # as many draws
        if full.chosen is None:
            assert fast is None
            continue
        assert fast is not None
        order, maybe_outdated = fast
        quoted = index.rendered(pos)
        assert [profile.names[i].decode() for i in order] == [c.mirror.name for c in full.ranked]
        assert [(profile.bases[i] + quoted).decode() for i in order] == [c.url for c in full.ranked]
        assert maybe_outdated == full.chosen.maybe_outdated


PLACES = [
    ("DE", "EU", 52.5, 13.4), ("FR", "EU", 48.9, 2.3), ("PL", "EU", 52.2, 21.0),
    ("ES", "EU", 40.4, -3.7), ("US", "NA", 40.7, -74.0), ("CA", "NA", 45.4, -75.7),
    ("JP", "AS", 35.7, 139.7), ("IN", "AS", 28.6, 77.2), ("BR", "SA", -23.5, -46.6),
]  # fmt: skip


def loaded_world(
    rng: random.Random,
) -> tuple[IndexSource, IndexConfig, LoadView, list[tuple[str, str, float, float]]]:
    """12 to 40 mirrors, those on three continents near or past their capacity, files up to
    2 GB (267 Mbit/s over the window), and places on those continents for clients: bands and
    spill candidates often without room for a file while mirrors further down a ranking
    have some, with every freshness rule in play."""
    n = rng.randint(12, 40)
    hot = {"EU", "NA", "AS", "SA"} - {rng.choice(["EU", "NA", "AS", "SA"])}
    mirrors = []
    for i in range(1, n + 1):
        cc, cont, lat, lon = rng.choice(PLACES)
        mirror = Mirror(
            id=i,
            name=f"m{i}",
            http_url=f"http://m{i}.example/",
            https_url=None,
            country=cc,
            continent=cont,
            latitude=lat + rng.uniform(-2, 2),
            longitude=lon + rng.uniform(-2, 2),
            capacity=rng.choice([100, 1000, 1000, 2000, 10_000]),
            enabled=rng.random() > 0.05,
            restrictions=Restrictions(only_own_country=rng.random() < 0.1),
            scope=rng.choice([(), (), (), ("a/",), ("b/",)]),
        )
        health = Health.DOWN if rng.random() < 0.05 else Health.UP
        mirrors.append((mirror, MirrorState(health, last_good_scan=rng.choice([100.0, 300.0]))))
    files = [
        (f, f"{rng.choice('abc')}/f{f}.iso", rng.choice([10**6, 3 * 10**8, 2 * 10**9, 2 * 10**9]), 1,
         None, rng.choice([50.0, 150.0, 250.0]))
        for f in range(1, 7)
    ]  # fmt: skip
    diffs = list({(rng.randint(1, n), rng.randint(1, 6)) for _ in range(rng.randint(0, n))})
    missing = [d for d in diffs if rng.random() < 0.5]
    confirmations = [
        (rng.randint(1, n), rng.randint(1, 6), rng.choice([100.0, 260.0])) for _ in range(5)
    ]
    config = IndexConfig(
        Band(1.5, rng.choice([0.0, 500.0])),
        rng.choice([0, 2, 4, 10]),  # 10: alternates past the spill candidates too
        0,
        (),
        rng.choice([(), (("a/", 100.0),)]),
    )
    capacities = {m.name: m.capacity for m, _ in mirrors}
    mbps = {  # three continents busy, one with more room
        m.name: m.capacity
        * rng.choice([0.95, 0.99, 1.0, 1.2] if m.continent in hot else [0.3, 0.5, 0.92])
        for m, _ in mirrors
    }
    load = make_view(mbps, {}, capacities)
    places = [p for p in PLACES if p[1] in hot]
    return IndexSource(1, mirrors, files, diffs, missing, confirmations), config, load, places


def test_fast_pick_equals_decide_when_looking_past_the_spill_candidates(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Seeded worlds where the hot path often has to look past the spill candidates: the
    same choice and order as the full decision, whose full=True form chooses the same
    mirror too. Counts that the new path was taken, both where it found a mirror further
    away and where it fell back to overflow_pick among band and spill candidates."""
    outcomes: Counter[str] = Counter()
    real = fast_path._held_back_pick

    def counted(found, profile, *args):  # type: ignore[no-untyped-def]
        first = real(found, profile, *args)
        near = {*found.members, *found.others[: fast_path.SPILL_CANDIDATES]}
        outcomes["further" if first not in near else "overflow"] += 1
        return first

    monkeypatch.setattr(fast_path, "_held_back_pick", counted)
    for seed in range(250):
        rng = random.Random(seed)
        source, config, load, places = loaded_world(rng)
        index = build_index(source, config)
        for cc, cont, lat, lon in rng.sample(places, 3):
            client = Client(ipaddress.ip_address("198.51.100.1"), Location(cc, cont, lat, lon))
            profile = index.profile(client, Options())
            for pos in range(len(index)):
                draw = rng.random()
                full_rng, fast_rng = random.Random(draw), random.Random(draw)
                full = index.decide(
                    pos, client, Options(), full_rng, full=False, now=240.0, load=load
                )
                fast = index.fast_pick(pos, profile, fast_rng, 240.0, load)
                assert fast_rng.random() == full_rng.random()  # as many draws
                if full.chosen is None:
                    assert fast is None
                    continue
                assert fast is not None
                names = [profile.mirror_names[i] for i in fast[0]]
                assert names == [c.mirror.name for c in full.ranked]
                assert fast[1] == full.chosen.maybe_outdated
                listed = index.decide(
                    pos, client, Options(), random.Random(draw), full=True, now=240.0, load=load
                )
                assert listed.chosen is not None and listed.chosen.mirror == full.chosen.mirror
    assert outcomes["further"] > 100 and outcomes["overflow"] > 100, outcomes


def berlin_mirrors() -> list[tuple[Mirror, MirrorState]]:
    """Four mirrors around Berlin, up, of capacities 1,000 to 4,000."""
    return [
        (
            Mirror(
                id=i, name=f"m{i}", http_url=f"http://m{i}.example/", https_url=None,
                country="DE", continent="EU", latitude=52.5, longitude=13.4 + i / 10,
                capacity=1000 * i,
            ),
            MirrorState(Health.UP, last_good_scan=300.0),
        )
        for i in range(1, 5)
    ]  # fmt: skip


def berlin_bands(
    files: int, missing: list[tuple[int, int]], sha: str | None
) -> tuple[Index, Profile, list[FastBand | None]]:
    """An index of ``files`` files pub/f1.iso ... on :func:`berlin_mirrors`, each (mirror,
    file) of ``missing`` lacking there; a Berlin client's ranking and each file's band (all
    of them bands: every file has a current copy near)."""
    rows = [(f, f"pub/f{f}.iso", 10_000, 1, sha, 50.0) for f in range(1, files + 1)]
    source = IndexSource(1, berlin_mirrors(), rows, missing, missing, [])
    index = build_index(source, IndexConfig(Band(1.5, 500.0), 2, 0, (), ()))
    client = Client(ipaddress.ip_address("192.0.2.7"), Location("DE", "EU", 52.5, 13.4))
    profile = index.profile(client, Options())
    bands = [index.fast_band(pos, profile) for pos in range(len(index))]
    assert all(b is not None for b in bands)
    return index, profile, bands


def test_bands_with_the_same_positions_share_their_tuples() -> None:
    """Files every near mirror holds get bands of one shape: the same tuple objects, with
    each file's own facts and answers; a file one mirror lacks gets a band of its own. A
    ranking keeps at most BAND_SHAPES_KEPT shapes."""
    # three files, each lacking on another mirror
    _, profile, bands = berlin_bands(5, [(1, 3), (2, 4), (3, 5)], sha=None)
    first, second = bands[0], bands[1]
    assert first is not None and second is not None
    assert first is not second and first.answers is not second.answers
    assert first.path != second.path  # each its own file
    for name in ("members", "cumulative", "by_capacity", "others", "member_names", "head"):
        assert getattr(first, name) is getattr(second, name), name
    lacking = [b for b in bands[2:] if b is not None]
    assert all(b.members != first.members or b.others != first.others for b in lacking)
    assert len(profile.band_shapes) == fast_path.BAND_SHAPES_KEPT


def test_band_fields_are_objects_the_collector_never_walks() -> None:
    """A request mix wider than the band cache makes a band per request: their positions
    are bytes (never tracked), their tuples of names and capacities are shared between
    bands of the same mirrors, and the rendered paths' and Digest values' caches hold bytes
    only, so their dicts stay untracked."""
    # (mirror, file): shapes for files 1-2, 3, 4-5 and 6-7, more than BAND_SHAPES_KEPT
    index, _, bands = berlin_bands(7, [(1, 3), (2, 4), (2, 5), (3, 6), (3, 7)], sha="ab" * 32)
    assert len({id(b.members) for b in bands if b is not None}) > fast_path.BAND_SHAPES_KEPT
    for band in bands:
        assert band is not None
        for name in ("members", "by_capacity", "others", "head"):
            assert type(getattr(band, name)) is bytes, name
    # Files 4 and 5 (and 6 and 7) lack the same mirror: shapes not kept, so their bands
    # were made apart, and still hold one tuple of names.
    for a, b in ((bands[3], bands[4]), (bands[5], bands[6])):
        assert a is not None and b is not None
        assert a.members == b.members and a.members is not b.members
        assert a.member_names is b.member_names and a.spill_names is b.spill_names
        assert a.member_caps is b.member_caps and a.cumulative is b.cumulative
        assert a.spill_caps is b.spill_caps
    for pos in range(len(index)):
        assert index.rendered(pos) == f"pub/f{pos + 1}.iso".encode()
        assert index.digest_header(pos) is not None
    assert not gc.is_tracked(index._rendered.data) and not gc.is_tracked(index._digests.data)


def test_bands_past_256_mirrors_hold_wide_positions() -> None:
    """Positions past 255 do not fit a byte: such rankings' bands hold array('H')."""
    mirrors = [
        (
            Mirror(
                id=i, name=f"m{i}", http_url=f"http://m{i}.example/", https_url=None,
                country="DE", continent="EU", latitude=52.5, longitude=13.4,
                capacity=100,
            ),
            MirrorState(Health.UP, last_good_scan=300.0),
        )
        for i in range(1, 301)
    ]  # fmt: skip
    files = [(1, "pub/f.iso", 10_000, 1, None, 50.0)]
    source = IndexSource(1, mirrors, files, [], [], [])
    index = build_index(source, IndexConfig(Band(1.5, 500.0), 2, 0, (), ()))
    client = Client(ipaddress.ip_address("192.0.2.7"), Location("DE", "EU", 52.5, 13.4))
    profile = index.profile(client, Options())
    band = index.fast_band(0, profile)
    assert band is not None
    assert isinstance(band.members, array) and band.members.typecode == "H"
    assert max(band.members) >= 256  # all 300 are equally near: one band of them all
    assert sorted(band.members) == list(range(300))
    picks = index.fast_pick(0, profile, random.Random(3), 240.0)
    assert picks is not None and picks[0][0] in band.members


def test_a_clean_files_band_is_the_band_its_own_walk_finds() -> None:
    """band_walk takes a ranking's clean walk (fast_path.CleanWalk) for a file that every
    mirror the walk visits holds current; the positions are those a walk of the file's
    own finds, over seeded worlds with scoped mirrors, missing and outdated copies, re-check
    confirmations and scans older than files. Both ways are taken often."""
    taken: Counter[bool] = Counter()
    for seed in range(150):
        rng = random.Random(seed)
        source, config, _, places = loaded_world(rng)
        # Most files older than every scan (50 s) and few scoped mirrors, as in a real
        # tree, so that the clean walk often holds.
        files = [(*f[:5], 50.0 if rng.random() < 0.7 else f[5]) for f in source.files]
        mirrors = [
            (dataclasses.replace(m, scope=()) if rng.random() < 0.9 else m, state)
            for m, state in source.mirrors
        ]
        index = build_index(dataclasses.replace(source, files=files, mirrors=mirrors), config)
        for cc, cont, lat, lon in rng.sample(places, 2):
            client = Client(ipaddress.ip_address("198.51.100.1"), Location(cc, cont, lat, lon))
            profile = index.profile(client, Options())
            for pos in range(len(index)):
                facts = index._facts(pos)
                args = (config.band, config.alternates, False)
                found = fast_path.band_walk(profile, *facts, *args)
                clean = profile.clean_walks[config.alternates]
                path, changed_at, bad = facts[:3]
                taken[
                    changed_at <= clean.oldest_scan
                    and (bad is None or clean.slots.isdisjoint(bad))
                    and all(path.startswith(s) for s in clean.scopes)
                ] += 1
                members, others = fast_path._walk(profile, profile.scopes, *facts, *args)
                if not members:
                    assert found is None
                    continue
                assert found is not None
                assert (list(found.members), list(found.others)) == (members, others)
                assert found.path == path and found.bad is bad and not found.tolerate
    assert taken[True] > 500 and taken[False] > 500, taken
