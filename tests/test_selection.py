"""Selection: every tier, restriction and exclusion reason; capacity shares; safety."""

from __future__ import annotations

import ipaddress
import random
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
    OriginFile,
    Reason,
    Restrictions,
    Scheme,
    Tier,
)
from mirrorhub.selection import (
    KIND_MISSING,
    KIND_OUTDATED,
    Band,
    FileFacts,
    choose,
    make_slot,
    rank_mirrors,
)

FILE = OriginFile("pub/x.iso", 1000, 1_700_000_000, None, changed_at=100.0)
SCANNED = MirrorState(health=Health.UP, last_good_scan=200.0)
BERLIN = Location("DE", "EU", 52.5, 13.4, 3320)
PARIS = (48.9, 2.3)
NEW_YORK = (40.7, -74.0)


def mirror(idx: int, **kw: object) -> Mirror:
    base: dict[str, object] = {
        "id": idx + 100,
        "name": f"m{idx}",
        "http_url": f"http://m{idx}.example/pub/",
        "https_url": f"https://m{idx}.example/pub/",
    }
    base.update(kw)
    return Mirror(**base)  # type: ignore[arg-type]


def slots_of(*mirrors: Mirror, state: MirrorState = SCANNED):  # type: ignore[no-untyped-def]
    return [make_slot(i, m, state, None) for i, m in enumerate(mirrors)]


def decide(slots, client=None, options=None, facts=None, members=frozenset(), rng=None, **kw):  # type: ignore[no-untyped-def]
    client = client or Client(ipaddress.ip_address("192.0.2.10"), BERLIN)
    options = options or Options()
    profile = rank_mirrors(slots, client, options, members, kw.pop("effective", None))
    return choose(
        profile,
        facts or FileFacts(FILE, None),
        "x.iso",
        rng or random.Random(1),
        band=Band(1.5, 500),
        alternates=4,
        full=True,
        client=client,
        options=options,
        confirmations=kw.pop("confirmations", None),
    )


def reasons(decision) -> dict[str, Reason]:  # type: ignore[no-untyped-def]
    return {e.mirror.name: e.reason for e in decision.excluded}


@pytest.mark.parametrize(
    ("others", "expected_tier"),
    [
        ({"networks": (ipaddress.ip_network("192.0.2.0/24"),)}, Tier.NETWORK),
        ({"asn": 3320}, Tier.ASN),
        ({"country": "DE"}, Tier.COUNTRY),
        ({"continent": "EU"}, Tier.CONTINENT),
    ],
)
def test_each_tier_beats_the_next(others: dict[str, object], expected_tier: Tier) -> None:
    near = mirror(0, **others, latitude=NEW_YORK[0], longitude=NEW_YORK[1])
    # A closer mirror in a worse tier must not win over the better tier.
    worse = mirror(1, country="US", continent="NA", latitude=52.5, longitude=13.4)
    slots = slots_of(near, worse)
    members = frozenset({0}) if expected_tier is Tier.NETWORK else frozenset()
    d = decide(slots, members=members)
    assert d.chosen is not None and d.chosen.mirror.name == "m0"
    assert d.chosen.tier is expected_tier


@pytest.mark.parametrize(
    ("mirror_kw", "state", "client_loc", "options", "reason"),
    [
        ({"enabled": False}, SCANNED, BERLIN, Options(), Reason.DISABLED),
        ({}, MirrorState(Health.DOWN, last_good_scan=200.0), BERLIN, Options(), Reason.DOWN),
        ({}, MirrorState(Health.UP, lagging=True, last_good_scan=200.0), BERLIN, Options(), Reason.LAGGING),
        ({}, MirrorState(Health.UP, scan_failed=True, last_good_scan=200.0), BERLIN, Options(), Reason.SCAN_FAILED),
        ({}, MirrorState(Health.UP), BERLIN, Options(), Reason.NOT_SCANNED),
        ({"https_url": None}, SCANNED, BERLIN, Options(https_only=True), Reason.NO_SCHEME),
        ({"https_url": None}, SCANNED, BERLIN, Options(scheme=Scheme.HTTPS), Reason.NO_SCHEME),
        ({"restrictions": Restrictions(excluded_countries=frozenset({"DE"}))}, SCANNED, BERLIN, Options(), Reason.COUNTRY_EXCLUDED),
        ({"restrictions": Restrictions(only_own_networks=True)}, SCANNED, BERLIN, Options(), Reason.NOT_OWN_NETWORK),
        ({"asn": 1, "restrictions": Restrictions(only_own_asn=True)}, SCANNED, BERLIN, Options(), Reason.NOT_OWN_ASN),
        ({"asn": 3320, "restrictions": Restrictions(only_own_asn=True)}, SCANNED, Location("DE", "EU"), Options(), Reason.NOT_OWN_ASN),
        ({"country": "FR", "restrictions": Restrictions(only_own_country=True)}, SCANNED, BERLIN, Options(), Reason.NOT_OWN_COUNTRY),
        ({"continent": "NA", "restrictions": Restrictions(only_own_continent=True)}, SCANNED, BERLIN, Options(), Reason.NOT_OWN_CONTINENT),
        ({"country": "FR"}, SCANNED, BERLIN, Options(avoid=frozenset({"FR"})), Reason.AVOIDED),
    ],
)  # fmt: skip
def test_static_exclusion_reasons(
    mirror_kw: dict[str, object],
    state: MirrorState,
    client_loc: Location,
    options: Options,
    reason: Reason,
) -> None:
    bad = make_slot(0, mirror(0, **mirror_kw), state, None)
    good = make_slot(1, mirror(1), SCANNED, None)
    client = Client(ipaddress.ip_address("192.0.2.10"), client_loc)
    d = decide([bad, good], client=client, options=options)
    assert reasons(d) == {"m0": reason}
    assert d.chosen is not None and d.chosen.mirror.name == "m1"


def test_world_tier_prefers_the_closer_mirror() -> None:
    far = mirror(0, country="US", continent="NA", latitude=NEW_YORK[0], longitude=NEW_YORK[1])
    near = mirror(1, country="US", continent="NA", latitude=52.5, longitude=13.4)
    d = decide(slots_of(far, near))
    assert d.chosen is not None and d.chosen.mirror.name == "m1"
    assert d.chosen.tier is Tier.WORLD and [c.share for c in d.ranked] == [1.0, 0.0]


def test_restrictions_that_match_allow_the_mirror() -> None:
    own = mirror(
        0,
        country="DE",
        continent="EU",
        asn=3320,
        networks=(ipaddress.ip_network("192.0.2.0/24"),),
        restrictions=Restrictions(True, True, True, True, frozenset({"CN"})),
    )
    d = decide(slots_of(own), members=frozenset({0}))
    assert d.chosen is not None and d.chosen.tier is Tier.NETWORK and d.excluded == ()


@pytest.mark.parametrize(
    ("facts", "scope", "state", "confirm", "reason"),
    [
        (FileFacts(FILE, bytes([0]), bytes([KIND_MISSING])), (), SCANNED, None, Reason.MISSING),
        (FileFacts(FILE, bytes([0]), bytes([KIND_OUTDATED])), (), SCANNED, None, Reason.OUTDATED),
        (FileFacts(FILE, None), ("src/",), SCANNED, None, Reason.OUT_OF_SCOPE),
        (FileFacts(FILE, None), (), MirrorState(Health.UP, last_good_scan=99.0), None, Reason.STALE),
        (FileFacts(FILE, None), (), MirrorState(Health.UP, last_good_scan=99.0), 99.5, Reason.STALE),
        (FileFacts(FILE, None), (), MirrorState(Health.UP, last_good_scan=99.0), 100.0, None),
        (FileFacts(FILE, None), ("pub/",), SCANNED, None, None),
        (FileFacts(FILE, bytes([0]), bytes([KIND_OUTDATED])), (), SCANNED, 100.0, None),
        (FileFacts(FILE, bytes([0]), bytes([KIND_OUTDATED])), ("src/",), SCANNED, 100.0, Reason.OUT_OF_SCOPE),
    ],
)  # fmt: skip
def test_per_file_reasons(
    facts: FileFacts,
    scope: tuple[str, ...],
    state: MirrorState,
    confirm: float | None,
    reason: Reason | None,
) -> None:
    slots = [
        make_slot(0, mirror(0, scope=scope), state, None),
        make_slot(1, mirror(1), SCANNED, None),
    ]
    d = decide(slots, facts=facts, confirmations={0: confirm} if confirm else None)
    assert reasons(d) == ({} if reason is None else {"m0": reason})


def test_no_fresh_mirror_means_no_choice() -> None:
    d = decide(slots_of(mirror(0)), facts=FileFacts(FILE, bytes([0]), bytes([KIND_MISSING])))
    assert d.chosen is None and d.ranked == ()


def test_far_mirrors_are_only_alternates() -> None:
    berlin = mirror(0, latitude=52.5, longitude=13.4, capacity=1000)
    paris = mirror(1, latitude=PARIS[0], longitude=PARIS[1], capacity=3000)
    ny = mirror(2, latitude=NEW_YORK[0], longitude=NEW_YORK[1], capacity=100000)
    slots = slots_of(berlin, paris, ny)
    counts: Counter[str] = Counter()
    rng = random.Random(7)
    for _ in range(4000):
        d = decide(slots, rng=rng)
        assert d.chosen is not None
        counts[d.chosen.mirror.name] += 1
    # Berlin client: the band is 1.5 x 0 km + 500 km, so Paris (~880 km) and New York get
    # nothing even with far more capacity; they are alternates only.
    assert counts == {"m0": 4000}


def test_band_includes_mirrors_within_factor_and_slack() -> None:
    near = mirror(0, latitude=52.5, longitude=13.4)  # 0 km
    hamburg = mirror(1, latitude=53.55, longitude=10.0)  # ~255 km: inside 0*1.5+500
    paris = mirror(2, latitude=PARIS[0], longitude=PARIS[1])  # ~880 km: outside
    d = decide(slots_of(near, hamburg, paris))
    shares = {c.mirror.name: c.share for c in d.ranked}
    assert shares["m0"] == pytest.approx(0.5) and shares["m1"] == pytest.approx(0.5)
    assert shares["m2"] == 0.0
    assert [c.mirror.name for c in d.ranked][-1] == "m2"


def test_no_client_location_means_capacity_weighting_only() -> None:
    client = Client(ipaddress.ip_address("192.0.2.1"), Location())
    slots = slots_of(mirror(0, capacity=100), mirror(1, capacity=300))
    d = decide(slots, client=client)
    assert {c.mirror.name: c.share for c in d.ranked} == {"m0": 0.25, "m1": 0.75}


def test_country_override_changes_tiers_but_not_restrictions() -> None:
    fr = mirror(0, country="FR", continent="EU")
    de_only = mirror(
        1, country="DE", continent="EU", restrictions=Restrictions(only_own_country=True)
    )
    fr_only = mirror(
        2, country="FR", continent="EU", restrictions=Restrictions(only_own_country=True)
    )
    slots = slots_of(fr, de_only, fr_only)
    effective = Location("FR", "EU", 46.6, 2.4)
    d = decide(slots, options=Options(country="FR"), effective=effective)
    assert d.chosen is not None and d.chosen.mirror.name == "m0"
    assert d.chosen.tier is Tier.COUNTRY
    assert reasons(d) == {"m2": Reason.NOT_OWN_COUNTRY}


def test_http_request_prefers_http_url_https_request_gets_https() -> None:
    only_https = mirror(0, http_url=None)
    d = decide(slots_of(only_https))
    assert d.chosen is not None and d.chosen.url == "https://m0.example/pub/x.iso"
    d = decide(slots_of(mirror(1)), options=Options(scheme=Scheme.HTTPS))
    assert d.chosen is not None and d.chosen.url.startswith("https://")


HTTP_DOWN = frozenset({Scheme.HTTP})
HTTPS_DOWN = frozenset({Scheme.HTTPS})
BOTH_DOWN = HTTP_DOWN | HTTPS_DOWN
HTTP_REQ = Options()
HTTPS_REQ = Options(scheme=Scheme.HTTPS)
HTTPS_ONLY = Options(https_only=True)
NO_HTTP: dict[str, object] = {"http_url": None}
NO_HTTPS: dict[str, object] = {"https_url": None}


@pytest.mark.parametrize(
    ("mirror_kw", "down", "options", "url_or_reason"),
    [
        # Nothing down: as before.
        ({}, frozenset(), HTTP_REQ, "http://m0.example/pub/x.iso"),
        ({}, frozenset(), HTTPS_REQ, "https://m0.example/pub/x.iso"),
        # HTTPS down: no HTTPS request goes there, HTTP requests still do.
        ({}, HTTPS_DOWN, HTTPS_REQ, Reason.SCHEME_DOWN),
        ({}, HTTPS_DOWN, HTTPS_ONLY, Reason.SCHEME_DOWN),
        ({}, HTTPS_DOWN, HTTP_REQ, "http://m0.example/pub/x.iso"),
        # HTTP down: an HTTP request falls back to the mirror's HTTPS URL.
        ({}, HTTP_DOWN, HTTP_REQ, "https://m0.example/pub/x.iso"),
        ({}, HTTP_DOWN, HTTPS_REQ, "https://m0.example/pub/x.iso"),
        ({**NO_HTTPS}, HTTP_DOWN, HTTP_REQ, Reason.SCHEME_DOWN),
        # Every usable scheme down.
        ({}, BOTH_DOWN, HTTP_REQ, Reason.SCHEME_DOWN),
        ({}, BOTH_DOWN, HTTPS_REQ, Reason.SCHEME_DOWN),
        ({**NO_HTTP}, HTTPS_DOWN, HTTP_REQ, Reason.SCHEME_DOWN),
        # A down scheme the mirror does not offer changes nothing (stale state).
        ({**NO_HTTP}, HTTP_DOWN, HTTP_REQ, "https://m0.example/pub/x.iso"),
        ({**NO_HTTPS}, HTTPS_DOWN, HTTP_REQ, "http://m0.example/pub/x.iso"),
        # No HTTPS offered at all stays "no https", whatever is down.
        ({**NO_HTTPS}, HTTPS_DOWN, HTTPS_REQ, Reason.NO_SCHEME),
        ({**NO_HTTPS}, HTTP_DOWN, HTTPS_REQ, Reason.NO_SCHEME),
    ],
)
def test_down_schemes(
    mirror_kw: dict[str, object],
    down: frozenset[Scheme],
    options: Options,
    url_or_reason: str | Reason,
) -> None:
    state = MirrorState(Health.UP, last_good_scan=200.0, down_schemes=down)
    slots = [make_slot(0, mirror(0, **mirror_kw), state, None)]
    d = decide(slots, options=options)
    if isinstance(url_or_reason, Reason):
        assert d.chosen is None
        assert reasons(d) == {"m0": url_or_reason}
    else:
        assert reasons(d) == {}
        assert d.chosen is not None and d.chosen.url == url_or_reason


def test_scheme_down_only_excludes_that_mirror_for_that_scheme() -> None:
    broken = make_slot(
        0,
        mirror(0, country="DE"),
        MirrorState(Health.UP, last_good_scan=200.0, down_schemes=HTTPS_DOWN),
        None,
    )
    other = make_slot(1, mirror(1, country="US"), SCANNED, None)
    d = decide([broken, other], options=HTTPS_REQ)
    assert d.chosen is not None and d.chosen.mirror.name == "m1"
    assert reasons(d) == {"m0": Reason.SCHEME_DOWN}
    d = decide([broken, other], options=HTTP_REQ)
    assert d.chosen is not None and d.chosen.mirror.name == "m0"  # same country wins
    assert d.chosen.url == "http://m0.example/pub/x.iso"
    assert reasons(d) == {}


def test_a_static_reason_wins_over_a_down_scheme() -> None:
    state = MirrorState(Health.DOWN, last_good_scan=200.0, down_schemes=BOTH_DOWN)
    d = decide([make_slot(0, mirror(0), state, None)])
    assert reasons(d) == {"m0": Reason.DOWN}


mirror_strategy = st.builds(
    lambda i, enabled, health, scanned, cap, country, bad, scope: (
        mirror(i, enabled=enabled, capacity=cap, country=country, scope=scope),
        MirrorState(health, last_good_scan=200.0 if scanned else 50.0),
        bad,
    ),
    st.just(0),
    st.booleans(),
    st.sampled_from(list(Health)),
    st.booleans(),
    st.integers(1, 10_000),
    st.sampled_from([None, "DE", "FR", "US"]),
    st.booleans(),
    st.sampled_from([(), ("pub/",), ("src/",)]),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(mirror_strategy, min_size=1, max_size=8), st.integers(0, 2**32))
def test_excluded_mirror_is_never_chosen(specs, seed) -> None:  # type: ignore[no-untyped-def]
    slots = [
        make_slot(
            i,
            mirror(i, **{k: getattr(m, k) for k in ("enabled", "capacity", "country", "scope")}),
            s,
            None,
        )
        for i, (m, s, _) in enumerate(specs)
    ]
    bad = bytes(i for i, (_, _, b) in enumerate(specs) if b)
    d = decide(slots, facts=FileFacts(FILE, bad or None), rng=random.Random(seed))
    excluded = {e.mirror.name for e in d.excluded}
    ranked = {c.mirror.name for c in d.ranked}
    assert excluded.isdisjoint(ranked)
    assert excluded | ranked == {s.mirror.name for s in slots}
    if d.chosen is not None:
        i = int(d.chosen.mirror.name[1:])
        m, s, b = specs[i]
        assert m.enabled and s.health is not Health.DOWN and s.last_good_scan == 200.0 and not b
        assert not m.scope or FILE.path.startswith(m.scope)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([BOTH_DOWN, HTTP_DOWN, HTTPS_DOWN, frozenset()]),
            st.sampled_from([{}, NO_HTTP, NO_HTTPS]),
        ),
        min_size=1,
        max_size=6,
    ),
    st.sampled_from([HTTP_REQ, HTTPS_REQ, HTTPS_ONLY]),
    st.integers(0, 2**32),
)
def test_a_down_scheme_is_never_handed_out(
    specs: list[tuple[frozenset[Scheme], dict[str, object]]], options: Options, seed: int
) -> None:
    slots = [
        make_slot(i, mirror(i, **kw), MirrorState(Health.UP, last_good_scan=200.0, down_schemes=down), None)
        for i, (down, kw) in enumerate(specs)
    ]  # fmt: skip
    d = decide(slots, options=options, rng=random.Random(seed))
    for c in d.ranked:
        down, _ = specs[int(c.mirror.name[1:])]
        scheme = Scheme(c.url.split(":", 1)[0])
        assert scheme not in down
        assert scheme is Scheme.HTTPS or not options.needs_https
    for e in d.excluded:
        assert e.reason in (Reason.SCHEME_DOWN, Reason.NO_SCHEME)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 1000), min_size=2, max_size=6), st.integers(0, 2**32))
def test_traffic_share_follows_capacity(capacities: list[int], seed: int) -> None:
    client = Client(ipaddress.ip_address("192.0.2.1"), Location())
    slots = slots_of(*(mirror(i, capacity=c) for i, c in enumerate(capacities)))
    profile = rank_mirrors(slots, client, Options(), frozenset())
    rng = random.Random(seed)
    draws = 20_000
    counts: Counter[int] = Counter()
    for _ in range(draws):
        d = choose(
            profile, FileFacts(FILE, None), "x", rng, band=Band(), alternates=0, full=False,
            client=client, options=Options(),
        )  # fmt: skip
        assert d.chosen is not None
        counts[int(d.chosen.mirror.name[1:])] += 1
    total = sum(capacities)
    for i, cap in enumerate(capacities):
        assert abs(counts[i] / draws - cap / total) < 0.03


def test_ranked_objects_are_made_on_demand_and_kept_only_for_recent_profiles() -> None:
    """A cached profile holds no Ranked objects until the full decision asks; then they are
    kept for the RANKED_KEPT profiles asked most recently, equal to what ranking made."""
    from mirrorhub.selection import ranking

    slots = slots_of(*[mirror(i, latitude=40.0 + i, longitude=10.0) for i in range(6)])
    client = Client(ipaddress.ip_address("192.0.2.10"), BERLIN)
    first = rank_mirrors(slots, client, Options(), frozenset())
    ranked = first.ranked
    assert [(r.slot, r.base) for r in ranked] == [
        (slots[i], slots[i].mirror.http_url) for i in first.idx
    ]
    assert [r.distance for r in ranked] == list(first.distances)
    assert first.ranked is ranked  # kept: one set of objects while it is recent
    for _ in range(ranking.RANKED_KEPT):
        assert rank_mirrors(slots, client, Options(), frozenset()).ranked
    assert len(ranking._ranked_kept) == ranking.RANKED_KEPT
    again = first.ranked
    assert again is not ranked and again == ranked  # let go, then made again alike
