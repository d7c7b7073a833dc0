"""The hot path in-process: status codes, headers, proxies, overrides and origin fallbacks."""

from __future__ import annotations

import base64
import dataclasses
import gc
import hashlib
import ipaddress
import random
import weakref
from pathlib import Path

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from mirrorhub.domain import Client, Health, Location, Mirror, MirrorState, Options, Scheme
from mirrorhub.geo import GeoLocator
from mirrorhub.index import IndexConfig, IndexHolder, IndexSource, build_index
from mirrorhub.load import LoadView
from mirrorhub.selection import Band, load_factors
from mirrorhub.selection.fast_path import band_order, draw_in_band
from mirrorhub.settings import Settings
from mirrorhub.web.origin import OriginServer
from mirrorhub.web.redirect import Dispatcher
from mirrorhub.web.views import Views
from mirrorhub.web.wire import NOTED, NOTED_HEADERS
from tests.geo_helpers import build_asn, build_city
from tests.test_fast_path import worlds

UP = MirrorState(Health.UP, last_good_scan=1000.0)
ISO = b"x" * 10_000
SHA = hashlib.sha256(ISO).hexdigest()

MIRRORS = [
    Mirror(1, "de1", "http://de1.example/pub/", "https://de1.example/pub/", country="DE",
           continent="EU", latitude=52.5, longitude=13.4),
    Mirror(2, "fr1", "http://fr1.example:8080/", None, country="FR", continent="EU",
           latitude=48.9, longitude=2.3),
    Mirror(3, "us1", "http://us1.example/m/", "https://us1.example/m/", country="US",
           continent="NA", latitude=40.7, longitude=-74.0),
]  # fmt: skip
FILES = [
    (1, "pub/x.iso", len(ISO), 1, SHA, 10.0),
    (2, "pub/only-us.iso", 10_000, 1, None, 10.0),
    (3, "pub/Release", 10_000, 1, None, 10.0),
    (4, "pub/a b+ü@.iso", 10_000, 1, None, 10.0),
    (5, "small.txt", 5, 1, None, 10.0),
    (6, "pub/nowhere.iso", 10_000, 1, None, 10.0),
]
DIFFS = [(1, 2), (2, 2), (1, 6), (2, 6), (3, 6)]


@pytest.fixture
def geo(tmp_path: Path) -> GeoLocator:
    return GeoLocator(build_city(tmp_path / "city.mmdb"), build_asn(tmp_path / "asn.mmdb"))


def make_app(geo: GeoLocator, tmp_path: Path, **settings_kw: object) -> Dispatcher:
    origin = tmp_path / "origin"
    (origin / "pub").mkdir(parents=True, exist_ok=True)
    (origin / "small.txt").write_bytes(b"tiny\n")
    (origin / "pub" / "Release").write_bytes(b"r" * 10_000)
    base: dict[str, object] = {"origin_dir": origin, "min_redirect_size": 100}
    base.update(settings_kw)
    settings = dataclasses.replace(Settings(), **base)
    config = IndexConfig(
        Band(1.5, 500), 4, settings.min_redirect_size, settings.origin_only_patterns
    )
    source = IndexSource(1, [(m, UP) for m in MIRRORS], FILES, DIFFS)
    holder = IndexHolder(build_index(source, config))
    inner = Starlette(routes=[Route("/-/ping", lambda r: PlainTextResponse("pong"))])
    return Dispatcher(
        settings, holder, geo, inner, OriginServer(settings), random.Random(3), Views()
    )


def client(app: Dispatcher, peer: str = "192.0.2.10", scheme: str = "http") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    return httpx.AsyncClient(transport=transport, base_url=f"{scheme}://dl.example")


async def test_redirects_to_the_nearest_fresh_mirror(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:  # 192.0.2.10 is in Berlin
        r = await c.get("/pub/x.iso")
    assert r.status_code == 302
    assert r.headers["location"] == "http://de1.example/pub/pub/x.iso"
    assert r.headers["cache-control"] == "private, no-store"
    assert r.headers["x-mirrorhub-mirror"] == "de1"
    assert r.headers["digest"] == "SHA-256=" + base64.b64encode(bytes.fromhex(SHA)).decode()
    links = r.headers.get_list("link")
    assert links[0] == "<http://de1.example/pub/pub/x.iso>; rel=duplicate; pri=1; geo=de"
    assert all(len(f"Link: {v}") < 360 for v in links) and len(links) == 4
    # No MIRRORHUB_PUBLIC_URL: a path-absolute reference, never built from the Host header.
    assert links[3] == '</pub/x.iso.meta4>; rel=describedby; type="application/metalink4+xml"'


async def test_cached_clients_do_not_keep_rankings_the_index_dropped(
    geo: GeoLocator, tmp_path: Path
) -> None:
    app = make_app(geo, tmp_path)
    index = app.holder.current
    index._profiles.limit = 1  # MIRRORHUB_RANKING_CACHE_SIZE=1, set after the build
    async with client(app, peer="192.0.2.10") as berlin:
        assert (await berlin.get("/pub/x.iso")).headers["x-mirrorhub-mirror"] == "de1"
    (ctx,) = app._contexts.values()
    first = ctx.ranking
    assert first() is not None
    async with client(app, peer="2001:db8::1") as new_york:  # a second ranking evicts it
        assert (await new_york.get("/pub/x.iso")).headers["x-mirrorhub-mirror"] == "us1"
    gc.collect()
    assert len(app._contexts) == 2 and first() is None  # not kept alive by the context
    async with client(app, peer="192.0.2.10") as berlin:  # ranked again, same answer
        assert (await berlin.get("/pub/x.iso")).headers["x-mirrorhub-mirror"] == "de1"
    assert app._contexts[next(iter(app._contexts))].ranking() is not None
    assert isinstance(first, weakref.ref)


async def test_head_is_a_redirect_too(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.head("/pub/x.iso", headers={"range": "bytes=0-10", "if-none-match": "x"})
    assert r.status_code == 302 and r.content == b""


async def test_mirror_lacking_the_file_is_never_chosen(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        for _ in range(20):
            r = await c.get("/pub/only-us.iso")
            assert r.headers["location"] == "http://us1.example/m/pub/only-us.iso"


async def test_paths_are_quoted_and_stay_on_the_mirror(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.get("/pub/a%20b+%C3%BC@.iso")
    assert r.headers["location"] == "http://de1.example/pub/pub/a%20b%2B%C3%BC%40.iso"


@pytest.mark.parametrize(
    "raw",
    ["/pub/../etc/passwd", "//evil.example/x", "/pub//x.iso", "/pub/%5Cx", "/pub/%00x",
     "/pub/%0Ax", "/" + "a" * 2000, "/pub/%ff.iso"],
)  # fmt: skip
async def test_malformed_paths_get_400(geo: GeoLocator, tmp_path: Path, raw: str) -> None:
    # Called with a raw scope: HTTP clients would remove dot segments before sending.
    from urllib.parse import unquote

    app = make_app(geo, tmp_path)
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "method": "GET", "path": unquote(raw, errors="replace"),
        "raw_path": raw.encode(), "query_string": b"", "headers": [],
        "client": ("192.0.2.10", 1), "scheme": "http",
    }  # fmt: skip
    await app(scope, receive, send)  # type: ignore[arg-type]
    start = sent[0]
    assert start["status"] == 400
    assert all(k != b"location" for k, _ in start["headers"])  # type: ignore[attr-defined]


async def test_unknown_is_404_and_other_methods_405(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        assert (await c.get("/pub/nope.iso")).status_code == 404
        r = await c.post("/pub/x.iso")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
        assert (await c.get("/-/ping")).text == "pong"


async def test_untrusted_forwarded_for_is_ignored(geo: GeoLocator, tmp_path: Path) -> None:
    # 198.51.100.0/24 is Japan; the untrusted Berlin peer cannot claim it.
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.get("/pub/x.iso", headers={"x-forwarded-for": "2001:db8::1"})
    assert r.headers["x-mirrorhub-mirror"] == "de1"


async def test_trusted_proxy_forwards_client_and_https(geo: GeoLocator, tmp_path: Path) -> None:
    app = make_app(geo, tmp_path, trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    async with client(app, peer="10.1.2.3") as c:
        r = await c.get(
            "/pub/x.iso",
            headers={"x-forwarded-for": "192.0.2.10, 2001:db8::1", "x-forwarded-proto": "https"},
        )
    # The rightmost untrusted address is the New York one, and HTTPS is required.
    assert r.headers["location"] == "https://us1.example/m/pub/x.iso"


# A trusted proxy (its forwarding headers count: many clients), and a client (they do not:
# the 2 schemes x 4 query strings).
@pytest.mark.parametrize(("peer", "least"), [("10.1.2.3", 50), ("192.0.2.10", 8)])
def test_a_context_from_the_noted_headers_equals_one_from_all(
    geo: GeoLocator, tmp_path: Path, peer: str, least: int
) -> None:
    """mirrorhub.web.protocol passes the headers in wire.NOTED_HEADERS apart; the context
    made from those (its cache key, client, options, view, Accept) is the one all headers
    give, for random header lists."""
    app = make_app(geo, tmp_path, trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    index = app.holder.current
    pool = [
        (b"x-forwarded-for", b"192.0.2.10"),
        (b"x-forwarded-for", b"2001:db8::1, 192.0.2.11"),
        (b"forwarded", b"for=192.0.2.12;proto=https"),
        (b"x-forwarded-proto", b"https"),
        (b"accept", b"application/json"),
        (b"accept", b"application/metalink4+xml, */*"),
        (b"range", b"bytes=0-"),
        (b"user-agent", b"Wget/1.21"),
        (b"cookie", b"a=b"),
        (b"x-real-ip", b"192.0.2.13"),
    ]
    rng = random.Random(11)
    keys = set()
    for _ in range(200):
        headers = [rng.choice(pool) for _ in range(rng.randrange(7))]
        scope = {
            "method": "GET",
            "path": "/pub/x.iso",
            "headers": headers,
            "client": (peer, 1),
            "scheme": rng.choice(["http", "https"]),
            "query_string": rng.choice([b"", b"https", b"json", b"country=US"]),
        }
        made = []
        for noted in (True, False):
            app.forget_clients()
            asked = dict(scope, **{NOTED: [h for h in headers if h[0] in NOTED_HEADERS]})
            ctx, profile, accept = app.context(asked if noted else scope, index)
            (key,) = app._contexts.data
            made.append((key, ctx.client, ctx.options, ctx.view, accept, profile.serial))
        assert made[0] == made[1]
        keys.add(made[0][0])
    assert len(keys) >= least


async def test_https_request_only_goes_to_https_mirrors(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path), peer="192.0.2.200", scheme="https") as c:
        r = await c.get("/pub/x.iso")  # Paris client, but fr1 has no HTTPS
    assert r.headers["location"].startswith("https://de1.example/")


async def test_query_overrides(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.get("/pub/x.iso?country=us")
        assert r.headers["x-mirrorhub-mirror"] == "us1"
        r = await c.get("/pub/x.iso?avoid=DE,FR")
        assert r.headers["x-mirrorhub-mirror"] == "us1"
        r = await c.get("/pub/x.iso?https=1")
        assert r.headers["location"].startswith("https://de1.example/")
        assert (await c.get("/pub/x.iso?country=XX")).status_code == 400
        assert (await c.get("/pub/x.iso?https=maybe")).status_code == 400


async def test_origin_fallbacks_redirect_to_origin_url(geo: GeoLocator, tmp_path: Path) -> None:
    app = make_app(geo, tmp_path, origin_url="https://origin.example/pub/")
    async with client(app) as c:
        for path, reason in [
            ("/pub/Release", "matches an origin-only pattern"),
            ("/small.txt", "smaller than the redirect threshold"),
            ("/pub/nowhere.iso", "no fresh mirror"),
        ]:
            r = await c.get(path)
            assert r.status_code == 302
            assert r.headers["location"] == "https://origin.example/pub/" + path[1:]
            assert r.headers["x-mirrorhub-origin"] == reason
        r = await c.get("/pub/")
        assert r.headers["location"] == "https://origin.example/pub/pub/"


async def test_origin_files_are_served_locally_without_origin_url(
    geo: GeoLocator, tmp_path: Path
) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.get("/small.txt")
        assert r.status_code == 200 and r.content == b"tiny\n"
        r = await c.get("/pub/Release", headers={"range": "bytes=0-3"})
        assert r.status_code == 206 and r.content == b"rrrr"
        # Known to the index but absent locally and on every mirror: retryable, not 500.
        r = await c.get("/pub/nowhere.iso")
        assert r.status_code == 503
        assert (await c.get("/pub/")).status_code == 404


async def test_json_view_shows_the_decision_and_reasons(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.get("/pub/only-us.iso?json")
        accept = await c.get("/pub/only-us.iso", headers={"accept": "application/json"})
    assert r.status_code == 200 and accept.json() == r.json()
    body = r.json()
    assert body["chosen"]["mirror"] == "us1"
    assert {e["mirror"]: e["reason"] for e in body["excluded"]} == {
        "de1": "outdated",
        "fr1": "outdated",
    }
    assert body["client"]["country"] == "DE"


NAMES = st.sampled_from([f"m{i}" for i in range(1, 13)])
UTILISATION = st.sampled_from([0.0, 0.3, 0.5, 0.89, 0.9, 0.93, 0.97, 0.98, 1.5])


@hypothesis_settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(NAMES, st.sampled_from([0.0, 0.25, 0.9, 1.0]), max_size=6),
    st.dictionaries(NAMES, UTILISATION, max_size=12),
    st.dictionaries(NAMES, st.integers(0, 40_000), max_size=12),
    st.lists(NAMES, max_size=16),
    st.sampled_from([0, 10_000, 700_000_000, 4_000_000_000]),
    st.sampled_from([10.0, 60.0]),
)
def test_hot_path_load_factors_equal_factor_for(
    factors: dict[str, float],
    utilisation: dict[str, float],
    capacities: dict[str, int],
    names: list[str],
    size: int,
    window: float,
) -> None:
    """selection.load_factors repeats LoadView.factor_for's arithmetic in one loop."""
    mbps = {m: u * capacities.get(m, 1000) for m, u in utilisation.items()}
    view = LoadView(factors, mbps, capacities, window=window)
    assert load_factors(view, names, size) == [view.factor_for(n, size) for n in names]


@hypothesis_settings(max_examples=200, deadline=None)
@given(
    worlds(),
    st.integers(0, 2**32),
    st.dictionaries(NAMES, UTILISATION, max_size=12),
    st.dictionaries(NAMES, st.sampled_from([0.0, 0.5]), max_size=4),
    st.sampled_from([1e-4, 60.0]),
)
def test_fast_pick_equals_decide_with_capacities_near_their_limit(  # type: ignore[no-untyped-def]
    world, seed, utilisation, factors, window
) -> None:
    """As tests/test_fast_path.py, with a load view that knows capacities and traffic, so
    that the hot path's own factor loop and its plain-draw shortcut are exercised (a 10 kB
    file in a 0.1 ms window adds 800 Mbit/s: enough to tip a mirror over)."""
    source, config = world
    capacities = {m.name: m.capacity for m, _ in source.mirrors}
    mbps = {m: u * capacities[m] for m, u in utilisation.items() if m in capacities}
    load = LoadView(factors, mbps, capacities, window=window)
    index = build_index(source, config)
    client = Client(ipaddress.ip_address("192.0.2.7"), Location("DE", "EU", 52.5, 13.4, 64500))
    profile = index.profile(client, Options())
    for pos in range(len(index)):
        rng = random.Random(seed)
        full = index.decide(pos, client, Options(), rng, full=False, now=240.0, load=load)
        fast = index.fast_pick(pos, profile, random.Random(seed), 240.0, load)
        if full.chosen is None:
            assert fast is None
            continue
        assert fast is not None
        assert [profile.names[i].decode() for i in fast[0]] == [c.mirror.name for c in full.ranked]
        assert fast[1] == full.chosen.maybe_outdated


# geo and tmp_path are only read (a fresh dispatcher per example): sharing them is safe.
@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    worlds(),
    st.sampled_from([Options(), Options(scheme=Scheme.HTTPS), Options(avoid=frozenset({"DE"}))]),
    st.integers(0, 2**32),
    st.sampled_from([240.0, 2000.0]),
    st.dictionaries(NAMES, st.sampled_from([0.0, 0.3, 0.9]), max_size=8),
)
def test_a_kept_302_equals_one_made_for_the_pick(  # type: ignore[no-untyped-def]
    geo, tmp_path, world, options, seed, now, factors
) -> None:
    """The ready-made answers are keyed by (ranking, file, stamp, chosen, outdated): whatever
    earlier pick filled an entry, it holds exactly what this pick's own headers would be (the
    alternates follow from the chosen mirror), including after a file's facts change."""
    source, config = world
    # Every file with a hash (an outdated pick leaves its Digest out).
    files = [(*row[:4], SHA, row[5]) for row in source.files]
    index = build_index(dataclasses.replace(source, files=files), config)
    app = make_app(geo, tmp_path)
    app.holder.current = index
    load = LoadView(factors, {}) if factors else None
    rng = random.Random(seed)
    client = Client(ipaddress.ip_address("192.0.2.7"), Location("DE", "EU", 52.5, 13.4, 64500))
    profile = index.profile(client, options)
    for round_ in range(3):
        for _ in range(6):
            for pos in range(len(index)):
                picks = index.fast_pick(pos, profile, rng, now, load)
                if picks is None:
                    continue
                lines = app.answer_lines(index, pos, profile, picks)
                made = app.redirect_headers(index, pos, profile, picks)
                assert lines == b"".join(b"%s: %s\r\n" % h for h in made)
                # The same for answers kept on the band (fast_redirect's common case).
                found = index.fast_band(pos, profile)
                if found is None:
                    continue
                first = draw_in_band(found, profile, rng, load, index.sizes[pos])
                kept = found.answers.get(first)
                band_lines = kept or app.band_answer(index, pos, profile, found, first)
                order = band_order(found, first, config.alternates)
                made = app.redirect_headers(index, pos, profile, (order, False))
                assert band_lines == b"".join(b"%s: %s\r\n" % h for h in made)
        # A file changed in place (new hash and time) gets new entries.
        fid, path, size, mtime, _, changed = files[round_ % len(files)]
        index.put_file((fid, path, size, mtime + 1, SHA[::-1], changed + 100.0))


@pytest.mark.parametrize("warm", [False, True])
def test_the_direct_answer_is_the_fast_pick_with_its_headers(
    geo: GeoLocator, tmp_path: Path, warm: bool
) -> None:
    """``fast_redirect`` looks bands up and draws in line: over many draws it answers what
    ``Index.fast_pick`` picks with the same random state, headers made for that pick."""
    app = make_app(geo, tmp_path)
    index = app.holder.current
    if warm:  # de1 held back: the draw goes through draw_in_band's load factors
        app.load = LoadView({"de1": 0.3}, {}, {m.name: 100 for m in MIRRORS})
        app.load.warm.update(m.name for m in MIRRORS)
    chosen = set()
    for n, (path, peer) in enumerate(
        # Berlin: de1 alone in the band; Japan: all three (the draw decides).
        [("/pub/x.iso", "192.0.2.10"), ("/pub/a b+ü@.iso", "198.51.100.7")] * 40
    ):
        scope = {"type": "http", "method": "GET", "path": path, "headers": [],
                 "client": (peer, 1234), "scheme": "http", "query_string": b""}  # fmt: skip
        app._paths.put(path, path[1:])
        app.rng = random.Random(n)
        lines = app.fast_redirect(scope)
        _, profile, _ = app.context(scope, index)
        pos = index.positions[path[1:]]
        picks = index.fast_pick(pos, profile, random.Random(n), 0.0, app.load)
        assert picks is not None and lines is not None
        made = app.redirect_headers(index, pos, profile, picks)
        assert lines == b"".join(b"%s: %s\r\n" % h for h in made)
        chosen.add(profile.mirror_names[picks[0][0]])
    assert len(chosen) > 1  # the band held several mirrors: the draw was exercised


def test_two_dispatchers_on_one_index_keep_their_own_answers(
    geo: GeoLocator, tmp_path: Path
) -> None:
    """Answers kept on an index's bands belong to the first dispatcher that used the index;
    another one (other settings, other Link lines) keeps its own."""
    first = make_app(geo, tmp_path)
    second = make_app(geo, tmp_path, public_url="https://dl.example.org/")
    second.holder.current = first.holder.current
    scope = {"type": "http", "method": "GET", "path": "/pub/x.iso", "headers": [],
             "client": ("192.0.2.10", 1234), "scheme": "http", "query_string": b""}  # fmt: skip
    for app in (first, second, first, second):
        app._paths.put("/pub/x.iso", "pub/x.iso")
    ours = b"</pub/x.iso.meta4>; rel=describedby"
    theirs = b"<https://dl.example.org/pub/x.iso.meta4>; rel=describedby"
    for _ in range(3):
        a, b = first.fast_redirect(scope), second.fast_redirect(scope)
        assert a is not None and ours in a and theirs not in a
        assert b is not None and theirs in b and ours not in b


def test_kept_302s_belong_to_one_index(geo: GeoLocator, tmp_path: Path) -> None:
    """A new index numbers its rankings from 1 again: nothing kept for the old one is used."""
    app = make_app(geo, tmp_path)
    scope = {"type": "http", "method": "GET", "path": "/pub/x.iso", "headers": [],
             "client": ("192.0.2.10", 1234), "query_string": b""}  # fmt: skip
    app._paths.put("/pub/x.iso", "pub/x.iso")  # as a first request through ``answer`` leaves it
    for _ in range(2):
        lines = app.fast_redirect(scope)
        assert lines is not None and b"location: http://de1.example/pub/pub/x.iso\r\n" in lines
    moved = dataclasses.replace(MIRRORS[0], http_url="http://de1.moved.example/")
    source = IndexSource(2, [(m, UP) for m in [moved, *MIRRORS[1:]]], FILES, DIFFS)
    app.holder.current = build_index(source, app.holder.current.config)
    lines = app.fast_redirect(scope)
    assert lines is not None and b"location: http://de1.moved.example/pub/x.iso\r\n" in lines
    assert b"link: <http://de1.moved.example/pub/x.iso>; rel=duplicate; pri=1" in lines
