"""The hot path's fast_pick makes exactly the choice of the full decide()."""

from __future__ import annotations

import ipaddress
import random

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
from mirrorhub.index import IndexConfig, IndexSource, build_index
from mirrorhub.load import LoadView
from mirrorhub.selection import Band

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
        full = index.decide(
            pos, client, options, random.Random(seed), full=False, now=now, load=load
        )
        fast = index.fast_pick(pos, profile, random.Random(seed), now, load)
        if full.chosen is None:
            assert fast is None
            continue
        assert fast is not None
        order, maybe_outdated = fast
        quoted, _ = index.rendered(pos)
        assert [profile.names[i].decode() for i in order] == [c.mirror.name for c in full.ranked]
        assert [(profile.bases[i] + quoted).decode() for i in order] == [c.url for c in full.ranked]
        assert maybe_outdated == full.chosen.maybe_outdated
