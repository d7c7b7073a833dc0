"""GeoIP lookups over real .mmdb files (built with mmdb-writer), and distance."""

from __future__ import annotations

import ipaddress
import logging
import math
import os
from pathlib import Path

import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet

from mirrorhub.domain import Location
from mirrorhub.errors import GeoIPError
from mirrorhub.geo import (
    DBIP_ATTRIBUTION,
    GEOLITE2_ATTRIBUTION,
    GeoLocator,
    city_fields,
    distance_km,
)
from tests.geo_helpers import BERLIN, NEW_YORK, PARIS, build_asn, build_city

ip = ipaddress.ip_address

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
