from __future__ import annotations

import ipaddress
import logging
import math
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from mirrorhub.domain import IPNetwork, Location
from mirrorhub.errors import GeoIPError
from mirrorhub.geo import (
    DBIP_ATTRIBUTION,
    GEOLITE2_ATTRIBUTION,
    ClientAddress,
    GeoLocator,
    _split_unquoted,
    _split_unquoted_escaped,
    city_fields,
    distance_km,
    normalise,
    resolve_client,
)
from tests.geo_helpers import BERLIN, NEW_YORK, PARIS, build_asn, build_city

ip = ipaddress.ip_address

TRUSTED: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("10.0.0.0/8"),
    ipaddress.ip_network("2001:db8:ffff::/48"),
    ipaddress.ip_network("127.0.0.1/32"),
)
PROXY = "10.0.0.1"

Headers = list[tuple[str, str]]

# (name, peer, headers, expected address, expected proto)
CASES: list[tuple[str, str | None, Headers, str, str | None]] = [
    ("plain peer", "203.0.113.5", [], "203.0.113.5", None),
    (
        "spoofed XFF from an untrusted peer is ignored",
        "203.0.113.5",
        [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https")],
        "203.0.113.5",
        None,
    ),
    (
        "spoofed Forwarded from an untrusted peer is ignored",
        "203.0.113.5",
        [("forwarded", "for=1.2.3.4;proto=https")],
        "203.0.113.5",
        None,
    ),
    ("trusted peer, one hop", PROXY, [("x-forwarded-for", "1.2.3.4")], "1.2.3.4", None),
    (
        "client-supplied leftmost entry is not believed",
        PROXY,
        [("x-forwarded-for", "6.6.6.6, 1.2.3.4")],
        "1.2.3.4",
        None,
    ),
    (
        "trusted hops are skipped from the right",
        PROXY,
        [("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.3,10.0.0.2")],
        "1.2.3.4",
        None,
    ),
    (
        "several XFF headers are joined in order",
        PROXY,
        [("x-forwarded-for", "6.6.6.6"), ("x-forwarded-for", "1.2.3.4, 10.0.0.2")],
        "1.2.3.4",
        None,
    ),
    (
        "all hops trusted: leftmost",
        PROXY,
        [("x-forwarded-for", "10.0.0.3, 10.0.0.2")],
        "10.0.0.3",
        None,
    ),
    ("garbage nearest: the peer", PROXY, [("x-forwarded-for", "1.2.3.4, garbage")], PROXY, None),
    (
        "garbage behind a trusted hop: that hop",
        PROXY,
        [("x-forwarded-for", "1.2.3.4, not-an-ip, 10.0.0.2")],
        "10.0.0.2",
        None,
    ),
    (
        "garbage left of the client is never reached",
        PROXY,
        [("x-forwarded-for", "junk, 1.2.3.4")],
        "1.2.3.4",
        None,
    ),
    ("empty XFF: the peer", PROXY, [("x-forwarded-for", "")], PROXY, None),
    ("XFF empty items are skipped", PROXY, [("x-forwarded-for", "1.2.3.4, ,")], "1.2.3.4", None),
    ("unknown in XFF stops", PROXY, [("x-forwarded-for", "1.2.3.4, unknown")], PROXY, None),
    ("XFF IPv4 with port", PROXY, [("x-forwarded-for", "1.2.3.4:5678")], "1.2.3.4", None),
    ("XFF bare IPv6", PROXY, [("x-forwarded-for", "2001:db8::1")], "2001:db8::1", None),
    (
        "XFF bracketed IPv6 with port",
        PROXY,
        [("x-forwarded-for", "[2001:db8::1]:4711")],
        "2001:db8::1",
        None,
    ),
    ("XFF bad port", PROXY, [("x-forwarded-for", "1.2.3.4:http")], PROXY, None),
    (
        "IPv6 trusted peer",
        "2001:db8:ffff::1",
        [("x-forwarded-for", "2001:db8::7")],
        "2001:db8::7",
        None,
    ),
    ("IPv6 untrusted peer", "2001:db8::9", [("x-forwarded-for", "1.2.3.4")], "2001:db8::9", None),
    (
        "mapped peer is IPv4 and trusted",
        "::ffff:10.0.0.1",
        [("x-forwarded-for", "1.2.3.4")],
        "1.2.3.4",
        None,
    ),
    ("mapped hop becomes IPv4", PROXY, [("x-forwarded-for", "::ffff:1.2.3.4")], "1.2.3.4", None),
    ("mapped untrusted peer", "::ffff:203.0.113.5", [], "203.0.113.5", None),
    ("no peer", None, [("x-forwarded-for", "1.2.3.4")], "0.0.0.0", None),
    ("empty peer", "", [], "0.0.0.0", None),
    ("garbage peer", "not-an-ip", [("x-forwarded-for", "1.2.3.4")], "0.0.0.0", None),
    # --- X-Forwarded-Proto
    (
        "XFP from a trusted peer",
        PROXY,
        [("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "HTTPS")],
        "1.2.3.4",
        "https",
    ),
    ("XFP without XFF", PROXY, [("x-forwarded-proto", "https")], PROXY, "https"),
    ("XFP unknown scheme", PROXY, [("x-forwarded-proto", "gopher")], PROXY, None),
    (
        "XFP aligned with XFF",
        PROXY,
        [("x-forwarded-for", "1.2.3.4, 10.0.0.2"), ("x-forwarded-proto", "https, http")],
        "1.2.3.4",
        "https",
    ),
    (
        "XFP not aligned: the rightmost",
        PROXY,
        [("x-forwarded-for", "6.6.6.6, 1.2.3.4, 10.0.0.2"), ("x-forwarded-proto", "http, https")],
        "1.2.3.4",
        "https",
    ),
    # --- RFC 7239 Forwarded
    ("Forwarded simple", PROXY, [("forwarded", "for=1.2.3.4")], "1.2.3.4", None),
    (
        "Forwarded quoted IPv6 with port and proto",
        PROXY,
        [("forwarded", 'for="[2001:db8::1]:4711";proto=https;by=10.0.0.1')],
        "2001:db8::1",
        "https",
    ),
    (
        "Forwarded obfuscated port",
        PROXY,
        [("forwarded", 'for="[2001:db8::1]:_p0rt"')],
        "2001:db8::1",
        None,
    ),
    (
        "Forwarded quoted IPv4 with port",
        PROXY,
        [("forwarded", 'for="1.2.3.4:80"')],
        "1.2.3.4",
        None,
    ),
    (
        "Forwarded names are case-insensitive",
        PROXY,
        [("forwarded", "For=1.2.3.4;PROTO=https")],
        "1.2.3.4",
        "https",
    ),
    (
        "Forwarded chain: rightmost untrusted",
        PROXY,
        [("forwarded", "for=6.6.6.6, for=1.2.3.4;proto=https, for=10.0.0.2;proto=http")],
        "1.2.3.4",
        "https",
    ),
    (
        "Forwarded over several headers",
        PROXY,
        [("forwarded", "for=6.6.6.6"), ("forwarded", "for=1.2.3.4, for=10.0.0.2")],
        "1.2.3.4",
        None,
    ),
    (
        "Forwarded wins over X-Forwarded-For",
        PROXY,
        [("x-forwarded-for", "5.6.7.8"), ("forwarded", "for=1.2.3.4")],
        "1.2.3.4",
        None,
    ),
    ("Forwarded for=unknown: the peer", PROXY, [("forwarded", "for=unknown")], PROXY, None),
    (
        "Forwarded obfuscated hop behind a trusted one",
        PROXY,
        [("forwarded", "for=1.2.3.4, for=_hidden, for=10.0.0.2")],
        "10.0.0.2",
        None,
    ),
    (
        "Forwarded without for=: the peer, its proto",
        PROXY,
        [("forwarded", "proto=https")],
        PROXY,
        "https",
    ),
    (
        "Forwarded quoted list is one garbage value",
        PROXY,
        [("forwarded", 'for="1.2.3.4, 5.6.7.8"')],
        PROXY,
        None,
    ),
    ("Forwarded unclosed bracket", PROXY, [("forwarded", 'for="[2001:db8::1"')], PROXY, None),
    ("Forwarded IPv4 in brackets", PROXY, [("forwarded", 'for="[1.2.3.4]"')], PROXY, None),
    ("Forwarded unbalanced quote", PROXY, [("forwarded", 'for="1.2.3.4')], PROXY, None),
    ("Forwarded pair without value", PROXY, [("forwarded", "for")], PROXY, None),
    ("Forwarded stray semicolon", PROXY, [("forwarded", "for=1.2.3.4;")], "1.2.3.4", None),
    ("Forwarded empty list items", PROXY, [("forwarded", "for=1.2.3.4, ,")], "1.2.3.4", None),
    ("Forwarded escaped quoted value", PROXY, [("forwarded", r'for="1.2.3.\4"')], "1.2.3.4", None),
    (
        "Forwarded all trusted",
        PROXY,
        [("forwarded", "for=10.0.0.3, for=10.0.0.2")],
        "10.0.0.3",
        None,
    ),
    (
        "Forwarded bad proto",
        PROXY,
        [("forwarded", "for=1.2.3.4;proto=javascript")],
        "1.2.3.4",
        None,
    ),
]


@pytest.mark.parametrize(
    ("peer", "headers", "address", "proto"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_resolve_client(
    peer: str | None, headers: Headers, address: str, proto: str | None
) -> None:
    raw = [(name.encode(), value.encode("latin-1")) for name, value in headers]
    result = resolve_client(peer, raw, TRUSTED)
    assert result == ClientAddress(ip(address), proto)
    assert type(result.address) is type(ip(address))


def test_resolve_client_without_trusted_proxies_ignores_headers() -> None:
    headers = [(b"x-forwarded-for", b"1.2.3.4"), (b"forwarded", b"for=5.6.7.8")]
    assert resolve_client("10.0.0.1", headers, ()) == ClientAddress(ip("10.0.0.1"))


def test_resolve_client_survives_hostile_headers() -> None:
    hostile = [
        (b"x-forwarded-for", b"\xff\xfe" * 1000),
        (b"forwarded", b'for="' + b"\\" * 999),
        (b"forwarded", b";;;,,,===" * 500),
    ]
    assert resolve_client(PROXY, hostile, TRUSTED).address == ip(PROXY)


HEADER_TEXT = st.text(alphabet=st.sampled_from('0123456789abcdef.:[]_,;="\\ unknowfr'), max_size=40)


@given(
    forwarded=st.lists(HEADER_TEXT, max_size=3),
    xff=st.lists(HEADER_TEXT, max_size=3),
    peer=st.sampled_from([PROXY, "203.0.113.5", "2001:db8:ffff::2", "junk"]),
)
def test_resolve_client_never_crashes(forwarded: list[str], xff: list[str], peer: str) -> None:
    headers = [(b"forwarded", v.encode()) for v in forwarded]
    headers += [(b"x-forwarded-for", v.encode()) for v in xff]
    result = resolve_client(peer, headers, TRUSTED)
    if peer == "junk":
        assert result == ClientAddress(ip("0.0.0.0"))
    elif peer == "203.0.113.5":
        assert result == ClientAddress(ip(peer))  # untrusted: headers never matter
    assert result.forwarded_proto in (None, "http", "https")


@given(text=st.text(alphabet=st.sampled_from('ab,;" ='), max_size=20))
def test_split_unquoted_fast_path_matches_the_scanner(text: str) -> None:
    for sep in ",;":
        assert _split_unquoted(text, sep) == _split_unquoted_escaped(text, sep)


def test_normalise() -> None:
    assert normalise(ip("::ffff:192.0.2.1")) == ip("192.0.2.1")
    assert normalise(ip("2001:db8::1")) == ip("2001:db8::1")
    assert normalise(ip("192.0.2.1")) == ip("192.0.2.1")


# --- distance ----------------------------------------------------------------------------


def test_distance_km() -> None:
    assert distance_km(*BERLIN, *BERLIN) == 0
    assert distance_km(*BERLIN, *PARIS) == pytest.approx(878, abs=5)
    assert distance_km(*PARIS, *NEW_YORK) == pytest.approx(5837, abs=15)
    assert distance_km(0, 0, 0, 180) == pytest.approx(math.pi * 6371)
    assert distance_km(*BERLIN, *PARIS) == distance_km(*PARIS, *BERLIN)


# --- GeoLocator --------------------------------------------------------------------------


@pytest.fixture
def locator(tmp_path: Path) -> GeoLocator:
    return GeoLocator(build_city(tmp_path / "city.mmdb"), build_asn(tmp_path / "asn.mmdb"))


def test_locate_city_and_asn(locator: GeoLocator) -> None:
    assert locator.enabled
    assert locator.locate(ip("192.0.2.1")) == Location("DE", "EU", *BERLIN, asn=64500)
    assert locator.locate(ip("192.0.2.200")) == Location("FR", "EU", *PARIS, asn=64500)
    assert locator.locate(ip("2001:db8:5::1")) == Location("US", "NA", *NEW_YORK, 4200000001)


def test_locate_ipv4_mapped(locator: GeoLocator) -> None:
    assert locator.locate(ip("::ffff:192.0.2.1")) == locator.locate(ip("192.0.2.1"))
    assert locator.locate(ip("::ffff:192.0.2.1")).country == "DE"


def test_locate_centroid_and_continent_fallbacks(locator: GeoLocator) -> None:
    assert locator.locate(ip("198.51.100.7")) == Location("JP", "AS", 36.0, 138.0)
    brazil = locator.locate(ip("203.0.113.9"))
    assert (brazil.country, brazil.continent, brazil.latitude) == ("BR", "SA", -23.55)


def test_locate_unknown_addresses(locator: GeoLocator) -> None:
    for address in ("10.1.2.3", "127.0.0.1", "0.0.0.0", "::1", "2a00::1"):
        assert locator.locate(ip(address)) == Location()


def test_no_database_configured() -> None:
    geo = GeoLocator(None, None)
    assert not geo.enabled
    assert geo.locate(ip("192.0.2.1")) == Location()
    assert geo.maybe_reload(force=True) is False
    assert geo.attribution() is None


def test_asn_only(tmp_path: Path) -> None:
    geo = GeoLocator(None, build_asn(tmp_path / "asn.mmdb"))
    assert geo.locate(ip("192.0.2.1")) == Location(asn=64500)


def test_ipv4_only_database_and_ipv6_lookup(tmp_path: Path) -> None:
    writer = MMDBWriter(ip_version=4, database_type="test-v4")
    writer.insert_network(IPSet(["192.0.2.0/24"]), {"country": {"iso_code": "DE"}})
    writer.to_db_file(str(tmp_path / "v4.mmdb"))
    geo = GeoLocator(tmp_path / "v4.mmdb", None)
    assert geo.locate(ip("192.0.2.1")) == Location("DE", "EU", 51.0, 9.0)
    assert geo.locate(ip("2001:db8::1")) == Location()  # the reader's ValueError is absorbed


def test_city_fields_tolerates_other_layouts() -> None:
    assert city_fields({"registered_country": {"iso_code": "fr"}}) == ("FR", "EU", 46.5, 2.5)
    assert city_fields({"country": {"iso_code": "DE"}, "continent": {"code": "XX"}})[1] == "EU"
    assert city_fields({"location": {"latitude": 1.0, "longitude": 2.0}}) == (
        None,
        None,
        1.0,
        2.0,
    )
    garbage = {"country": {"iso_code": 7}, "location": {"latitude": "x", "longitude": True}}
    assert city_fields(garbage) == (None, None, None, None)
    assert city_fields({"location": {"latitude": 91.0, "longitude": 0}}) == (None,) * 4
    assert city_fields({"country": "DE"}) == (None,) * 4


def test_cache_is_bounded(tmp_path: Path) -> None:
    geo = GeoLocator(build_city(tmp_path / "city.mmdb"), None, cache_size=4)
    for n in range(100):
        geo.locate(ipaddress.IPv4Address(f"192.0.2.{n}"))
    assert geo._cached.cache_info().currsize == 4


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_reload_on_change(tmp_path: Path) -> None:
    clock = FakeClock()
    city = build_city(tmp_path / "city.mmdb")
    geo = GeoLocator(city, None, check_interval=30, clock=clock)
    assert geo.locate(ip("192.0.2.1")).country == "DE"  # now cached
    assert geo.maybe_reload() is False  # nothing changed (and too early anyway)

    build_city(city, [("192.0.2.0/24", "NL", "EU", 52.37, 4.9)])
    clock.now += 10
    assert geo.maybe_reload() is False  # not yet time to look
    assert geo.locate(ip("192.0.2.1")).country == "DE"
    clock.now += 30
    assert geo.maybe_reload() is True
    assert geo.locate(ip("192.0.2.1")) == Location("NL", "EU", 52.37, 4.9)
    clock.now += 30
    assert geo.maybe_reload() is False  # unchanged since


def test_corrupt_replacement_keeps_the_old_database(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    city = build_city(tmp_path / "city.mmdb")
    geo = GeoLocator(city, None)
    bad = tmp_path / "bad.mmdb"
    bad.write_bytes(b"this is not an mmdb file" * 100)
    os.replace(bad, city)
    with caplog.at_level(logging.WARNING, logger="mirrorhub.geo"):
        assert geo.maybe_reload(force=True) is False
        assert geo.maybe_reload(force=True) is False
    assert geo.locate(ip("192.0.2.1")).country == "DE"
    warnings = [r for r in caplog.records if "cannot be opened" in r.getMessage()]
    assert len(warnings) == 1  # warned once, not at every check
    assert "keeping the previous one" in warnings[0].getMessage()

    build_city(city, [("192.0.2.0/24", "AT", "EU", 48.2, 16.37)])  # fixed later
    assert geo.maybe_reload(force=True) is True
    assert geo.locate(ip("192.0.2.1")).country == "AT"


def test_database_appearing_later_is_picked_up(tmp_path: Path) -> None:
    city = tmp_path / "geoip" / "city.mmdb"
    geo = GeoLocator(city, None)  # not fetched yet: no geo, no error
    assert not geo.enabled
    assert geo.locate(ip("192.0.2.1")) == Location()
    build_city(city)
    assert geo.maybe_reload(force=True) is True
    assert geo.locate(ip("192.0.2.1")).country == "DE"


def test_deleted_database_keeps_serving(tmp_path: Path) -> None:
    city = build_city(tmp_path / "city.mmdb")
    geo = GeoLocator(city, None)
    city.unlink()
    assert geo.maybe_reload(force=True) is False
    assert geo.locate(ip("192.0.2.77")).country == "DE"


def test_corrupt_database_at_start_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "city.mmdb"
    bad.write_bytes(b"\x00" * 64)
    with pytest.raises(GeoIPError, match=r"city database .* cannot be opened"):
        GeoLocator(bad, None)


def test_attribution(tmp_path: Path) -> None:
    test_db = GeoLocator(build_city(tmp_path / "t.mmdb"), None)
    assert test_db.attribution() is None
    dbip = GeoLocator(
        build_city(tmp_path / "c.mmdb", database_type="DBIP-City-Lite"),
        build_asn(tmp_path / "a.mmdb", database_type="DBIP-ASN-Lite"),
    )
    assert dbip.attributions() == (DBIP_ATTRIBUTION,)
    assert dbip.attribution() == "IP Geolocation by DB-IP (https://db-ip.com)"
    mixed = GeoLocator(
        build_city(tmp_path / "c2.mmdb", description="dbip-city-lite-2024-05"),
        build_asn(tmp_path / "a2.mmdb", database_type="GeoLite2-ASN"),
    )
    assert mixed.attributions() == (DBIP_ATTRIBUTION, GEOLITE2_ATTRIBUTION)
    text = mixed.attribution()
    assert text is not None
    assert "DB-IP" in text
    assert "GeoLite2 data created by MaxMind, available from https://www.maxmind.com" in text


def test_close(locator: GeoLocator) -> None:
    locator.close()
    assert not locator.enabled
    assert locator.locate(ip("192.0.2.1")) == Location()
