"""Per-file views in-process: ?mirrorlist, ?json, Metalink (.meta4, ?meta4, Accept) and
checksums (.sha256, ?sha256), including hostile names and reflected input."""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import random
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import httpx
import markupsafe
import pytest
from starlette.applications import Starlette

from mirrorhub.domain import Health, Mirror, MirrorState
from mirrorhub.geo import GeoLocator
from mirrorhub.index import IndexConfig, IndexHolder, IndexSource, build_index
from mirrorhub.selection import Band
from mirrorhub.settings import Settings
from mirrorhub.web.origin import OriginServer
from mirrorhub.web.redirect import Dispatcher
from mirrorhub.web.views import Views
from tests.geo_helpers import build_asn, build_city
from tests.test_metalink import check_rfc5854

UP = MirrorState(Health.UP, last_good_scan=1000.0)
SHA = hashlib.sha256(b"iso").hexdigest()
SHA_EVIL = hashlib.sha256(b"evil").hexdigest()
EVIL_NAME = "<img src=x onerror=alert(1)>&'\" ü.iso"
Q = "{urn:ietf:params:xml:ns:metalink}"

MIRRORS = [
    Mirror(1, "de1", "http://de1.example/pub/", None, country="DE", continent="EU",
           latitude=52.5, longitude=13.4),
    Mirror(2, "<script>alert('m')</script>", "http://fr1.example/", None, country="FR",
           continent="EU", latitude=48.9, longitude=2.3),
    Mirror(3, "us1", "http://us1.example/m/", None, country="US", continent="NA",
           latitude=40.7, longitude=-74.0),
    Mirror(4, "off", "http://off.example/", None, country="DE", enabled=False),
]  # fmt: skip
FILES = [
    (1, "pub/x.iso", 10_000, 1_700_000_000, SHA, 10.0),
    (2, "pub/" + EVIL_NAME, 10_000, 1, SHA_EVIL, 10.0),
    (3, "pub/nohash.iso", 10_000, 1, None, 10.0),
    (4, "pub/own.iso", 10_000, 1, SHA, 10.0),
    (5, "pub/own.iso.meta4", 10_000, 1, None, 10.0),  # published on the origin: it wins
    (6, "pub/own.iso.sha256", 100, 1, None, 10.0),
    (7, "pub/Release", 10_000, 1, SHA, 10.0),  # origin-only
    (8, "pub/" + "a" * 300 + ".iso", 10_000, 1, SHA, 10.0),
]
DIFFS = [(3, 1)]  # us1 lacks x.iso


@pytest.fixture
def geo(tmp_path: Path) -> GeoLocator:
    return GeoLocator(build_city(tmp_path / "city.mmdb"), build_asn(tmp_path / "asn.mmdb"))


def make_app(
    geo: GeoLocator, tmp_path: Path, *, mirrors: list[Mirror] | None = None, **settings_kw: Any
) -> Dispatcher:
    origin = tmp_path / "origin" / "pub"
    origin.mkdir(parents=True, exist_ok=True)
    (origin / "own.iso.sha256").write_text("published by the origin\n")
    base: dict[str, Any] = {"origin_dir": origin.parent, "min_redirect_size": 100}
    base.update(settings_kw)
    settings = dataclasses.replace(Settings(), **base)
    config = IndexConfig(Band(1.5, 500), 4, 100, settings.origin_only_patterns)
    source = IndexSource(1, [(m, UP) for m in mirrors or MIRRORS], FILES, DIFFS)
    holder = IndexHolder(build_index(source, config))
    return Dispatcher(
        settings, holder, geo, Starlette(), OriginServer(settings), random.Random(3),
        Views(settings),
    )  # fmt: skip


def client(app: Dispatcher, peer: str = "192.0.2.10") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://dl.example")


def urls_of(doc: bytes) -> list[tuple[str | None, str | None, str | None]]:
    f = check_rfc5854(doc)
    return [(u.text, u.get("location"), u.get("priority")) for u in f.findall(Q + "url")]


async def test_mirrorlist_shows_client_file_ranking_and_exclusions(
    geo: GeoLocator, tmp_path: Path
) -> None:
    async with client(make_app(geo, tmp_path)) as c:  # 192.0.2.10: Berlin
        r = await c.get("/pub/x.iso?mirrorlist")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    assert r.headers["cache-control"] == "private, no-store"
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    page = r.text
    assert "192.0.2.10" in page and "DE" in page and "AS64500" in page
    assert SHA in page and "10,000 bytes" in page and "2023-11-14 22:13 UTC" in page
    assert page.index("de1") < page.index("&lt;script&gt;")  # ranked, nearest first
    assert "http://de1.example/pub/pub/x.iso" in page
    assert "%" in page and "km" in page
    # Exclusions and their reasons: us1 lacks the file (outdated), "off" is disabled.
    assert "us1" in page and "outdated" in page and "disabled" in page
    assert 'href="./x.iso.meta4"' in page and 'href="./x.iso.sha256"' in page
    assert "IP Geolocation by DB-IP" in page


async def test_mirrorlist_escapes_names_paths_and_never_reflects_the_query(
    geo: GeoLocator, tmp_path: Path
) -> None:
    evil_path = "/pub/" + EVIL_NAME
    app = make_app(geo, tmp_path, trusted_proxies=(ipaddress.ip_network("10.0.0.0/8"),))
    async with client(app, peer="10.0.0.1") as c:
        r = await c.get(
            evil_path,
            params={"mirrorlist": "", "x": "<script>q()</script>", "country": " fr "},
            headers={"x-forwarded-for": "<script>xff()</script>, 192.0.2.10"},
        )
        assert r.status_code == 200
        page = r.text
        for raw in ["<script>", "<img", "onerror=alert(1)>", "q()", "xff()"]:
            assert raw not in page, raw
        assert str(markupsafe.escape(EVIL_NAME)) in page
        assert "&lt;script&gt;alert(&#39;m&#39;)&lt;/script&gt;" in page
        assert "192.0.2.10" in page and "Ranked as if in" in page and ">FR <" in page
        # A value the hot path cannot validate is refused before any page is rendered.
        r = await c.get("/pub/x.iso?mirrorlist&country=%3Cscript%3E")
        assert r.status_code == 400 and "<script" not in r.text


async def test_mirror_urls_that_are_not_http_get_no_link(geo: GeoLocator, tmp_path: Path) -> None:
    from mirrorhub.domain import Candidate, Client, Decision, Options, OriginFile, Tier
    from mirrorhub.web.views import mirrorlist_context

    m = Mirror(9, "odd", "javascript:alert(1)//", None)
    f = OriginFile("x.iso", 1, 1, None, 1.0)
    cand = Candidate(m, "javascript:alert(1)//x.iso", Tier.WORLD, None, 1.0)
    d = Decision(
        "x.iso", f, Client(ipaddress.ip_address("192.0.2.1")), Options(), cand, (cand,), ()
    )
    assert mirrorlist_context(d, None)["ranked"][0]["url"] is None


async def test_json_view_matches_accept_and_names_the_file(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.get("/pub/x.iso?json")
        a = await c.get("/pub/x.iso", headers={"accept": "application/json"})
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["file"] == {"name": "x.iso", "size": 10_000, "mtime": 1_700_000_000, "sha256": SHA}
    assert {(e["mirror"], e["reason"]) for e in body["excluded"]} == {
        ("us1", "outdated"),
        ("off", "disabled"),
    }
    assert [m["mirror"] for m in body["ranked"]] == [m["mirror"] for m in a.json()["ranked"]]


async def test_metalink_by_suffix_query_and_accept(geo: GeoLocator, tmp_path: Path) -> None:
    app = make_app(geo, tmp_path, origin_url="https://origin.example/pub/")
    async with client(app) as c:
        docs = [
            await c.get("/pub/x.iso.meta4"),
            await c.get("/pub/x.iso?meta4"),
            await c.get("/pub/x.iso", headers={"accept": "application/metalink4+xml"}),
            await c.get("/pub/x.iso", headers={"accept": "*/*, application/metalink4+xml"}),
        ]
        head = await c.head("/pub/x.iso.meta4")
    for r in docs:
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/metalink4+xml"
        assert r.headers["cache-control"] == "private, no-store"
        f = check_rfc5854(r.content)
        assert f.get("name") == "x.iso" and f.findtext(Q + "size") == "10000"
        assert f.findtext(Q + "hash") == SHA
        got = urls_of(r.content)
        # Fresh mirrors (de1 and the FR one share the band; us1 lacks the file), origin last.
        assert {u for u, _, _ in got[:2]} == {
            "http://de1.example/pub/pub/x.iso",
            "http://fr1.example/pub/x.iso",
        }
        assert got[2] == ("https://origin.example/pub/pub/x.iso", None, "3")
        assert [p for _, _, p in got] == ["1", "2", "3"]
        assert {loc for _, loc, _ in got[:2]} == {"de", "fr"}
    assert head.status_code == 200 and head.content == b""
    assert "x.iso.meta4" in docs[0].headers["content-disposition"]


async def test_metalink_for_hostile_names(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.get("/pub/" + EVIL_NAME + ".meta4")
    f = check_rfc5854(r.content)
    assert f.get("name") == EVIL_NAME
    assert all("%3C" in (u or "") for u, _, _ in urls_of(r.content))  # %-encoded in URLs
    assert r.headers["content-disposition"].isascii()


async def test_published_files_win_over_generated_ones(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        r = await c.get("/pub/own.iso.meta4")
        assert r.status_code == 302  # the origin's own .meta4, redirected like any file
        assert r.headers["location"].endswith("/pub/own.iso.meta4")
        r = await c.get("/pub/own.iso.sha256")
        assert r.text == "published by the origin\n"  # origin-only, served from the tree
        assert (await c.get("/pub/nope.iso.meta4")).status_code == 404
        assert (await c.get("/pub/nope.iso.sha256")).status_code == 404


async def test_checksums(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        for url in ["/pub/x.iso.sha256", "/pub/x.iso?sha256"]:
            r = await c.get(url)
            assert r.status_code == 200 and r.text == f"{SHA}  x.iso\n"
            assert r.headers["content-type"] == "text/plain; charset=utf-8"
        r = await c.get("/pub/" + EVIL_NAME + ".sha256")
        assert r.text == f"{SHA_EVIL}  {EVIL_NAME}\n"
        assert (await c.get("/pub/nohash.iso.sha256")).status_code == 404


async def test_origin_only_files_list_only_the_origin(geo: GeoLocator, tmp_path: Path) -> None:
    async with client(make_app(geo, tmp_path)) as c:
        # No origin URL, no public URL: no absolute URL to list, so no document.
        assert (await c.get("/pub/Release.meta4")).status_code == 404
    app = make_app(geo, tmp_path, public_url="https://dl.example.org/")
    async with client(app) as c:
        r = await c.get("/pub/Release.meta4")
    assert urls_of(r.content) == [("https://dl.example.org/pub/Release", None, "1")]
    origin = ET.fromstring(r.content).find(Q + "origin")  # noqa: S314 (our own output)
    assert origin is not None and origin.text == "https://dl.example.org/pub/Release.meta4"


async def test_describedby_uses_the_public_url_never_the_host(
    geo: GeoLocator, tmp_path: Path
) -> None:
    app = make_app(geo, tmp_path, public_url="https://dl.example.org/")
    async with client(app) as c:
        r = await c.get("/pub/x.iso", headers={"host": "evil.example"})
        long = await c.get("/pub/" + "a" * 300 + ".iso")
    assert r.status_code == 302
    described = [v for v in r.headers.get_list("link") if "describedby" in v]
    assert described == [
        "<https://dl.example.org/pub/x.iso.meta4>; rel=describedby; "
        'type="application/metalink4+xml"'
    ]
    # Old APT breaks on header lines of 360 bytes or more: a long path drops the line.
    assert long.status_code == 302
    assert all(len(f"Link: {v}") < 360 for v in long.headers.get_list("link"))
    assert not any("describedby" in v for v in long.headers.get_list("link"))


# --- load against capacity -------------------------------------------------------------------

FR = "<script>alert('m')</script>"


def row_of(page: str, table: str, name: str) -> str:
    """The ``<tr>`` of ``name`` (escaped as the page shows it) in the table ``#table``."""
    body = page[page.index(f'id="{table}"') :]
    body = body[: body.index("</table>")]
    cell = f"<td>{markupsafe.escape(name)}"
    rows = [r for r in body.split("<tr>") if cell in r]
    assert len(rows) == 1, (name, rows)
    return rows[0]


async def test_mirrorlist_and_json_show_load_against_capacity(
    geo: GeoLocator, tmp_path: Path
) -> None:
    from mirrorhub.load import make_view

    app = make_app(geo, tmp_path)
    # This dispatcher sent de1 412.3 Mbit/s and the FR mirror 960 (96 % of 1,000: held
    # back to a quarter); the rest of the fleet sent us1 250. "off" got nothing.
    view = make_view({"de1": 412.3, FR: 960.0}, {"us1": 250.0}, {m.name: 1000 for m in MIRRORS})
    app.load = view
    assert isinstance(app.views, Views)
    app.views.load = lambda: view
    async with client(app) as c:
        page = (await c.get("/pub/x.iso?mirrorlist")).text
        doc = (await c.get("/pub/x.iso?json")).json()

    de1 = row_of(page, "ranked", "de1")
    assert "412 / 1,000 Mbit/s (41 %)" in de1 and "held back" not in de1
    fr = row_of(page, "ranked", FR)
    assert "960 / 1,000 Mbit/s (96 %)" in fr
    assert "held back" in fr and "near capacity: gets 25 % of its usual share" in fr
    assert "250 / 1,000 Mbit/s (25 %)" in row_of(page, "excluded", "us1")
    off = row_of(page, "excluded", "off")
    assert "0 / 1,000 Mbit/s (0 %)" in off and "held back" not in off
    assert page.count('<span class="badge lagging">held back</span>') == 1
    text = " ".join(page.split())
    assert "over the last 60 s" in text and "(not a measurement at the mirror)" in text
    assert "<script>" not in page  # the held-back wording did not unescape anything

    ranked = {m["mirror"]: m["load"] for m in doc["ranked"]}
    assert ranked["de1"] == {"mbps": 412.3, "capacity_mbps": 1000, "utilisation": 0.4123,
                             "factor": 1.0, "held_back": False}  # fmt: skip
    assert ranked[FR] == {"mbps": 960.0, "capacity_mbps": 1000, "utilisation": 0.96,
                          "factor": 0.25, "held_back": True}  # fmt: skip
    assert doc["chosen"]["load"] == ranked[doc["chosen"]["mirror"]]
    excluded = {e["mirror"]: e["load"] for e in doc["excluded"]}
    assert excluded["us1"]["mbps"] == 250.0 and excluded["us1"]["held_back"] is False
    assert excluded["off"] == {"mbps": 0.0, "capacity_mbps": 1000, "utilisation": 0.0,
                               "factor": 1.0, "held_back": False}  # fmt: skip


async def test_without_an_estimate_every_mirror_shows_zero_of_its_capacity(
    geo: GeoLocator, tmp_path: Path
) -> None:
    big = Mirror(5, "big", "http://big.example/", None, country="DE", continent="EU",
                 latitude=52.5, longitude=13.4, capacity=10_000)  # fmt: skip
    # No load view: nothing was sent yet, or the feature is not wired.
    app = make_app(geo, tmp_path, mirrors=[*MIRRORS, big])
    async with client(app) as c:
        page = (await c.get("/pub/x.iso?mirrorlist")).text
        doc = (await c.get("/pub/x.iso?json")).json()
    assert "0 / 10,000 Mbit/s (0 %)" in row_of(page, "ranked", "big")
    assert "0 / 1,000 Mbit/s (0 %)" in row_of(page, "ranked", "de1")
    assert "0 / 1,000 Mbit/s (0 %)" in row_of(page, "excluded", "us1")
    assert "badge lagging" not in page  # nobody held back
    loads = [m["load"] for m in doc["ranked"]] + [e["load"] for e in doc["excluded"]]
    assert len(loads) == 5
    assert all(x["mbps"] == 0.0 and x["factor"] == 1.0 and not x["held_back"] for x in loads)
    assert {m["mirror"]: m["load"]["capacity_mbps"] for m in doc["ranked"]}["big"] == 10_000
