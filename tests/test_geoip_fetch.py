"""``geoip fetch`` against a real HTTP server on loopback."""

from __future__ import annotations

import argparse
import gzip
import ipaddress
import socket
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mirrorhub.cli import geoip as geoip_cli
from mirrorhub.errors import GeoIPError
from mirrorhub.geo import GeoLocator
from mirrorhub.geoip_fetch import destination_paths, fetch_databases, month_urls
from mirrorhub.settings import Settings
from tests.geo_helpers import FileServer, build_asn, build_city, file_server

MAY_2024 = datetime(2024, 5, 10, 12, 0, tzinfo=UTC)
CITY_TEMPLATE = "/city-{year}-{month:02d}.mmdb.gz"
ASN_TEMPLATE = "/asn-{year}-{month:02d}.mmdb.gz"


def clock() -> datetime:
    return MAY_2024


@pytest.fixture
def server() -> Iterator[FileServer]:
    with file_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def databases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Raw mmdb bytes: city v1 (DE) and v2 (FR), and an ASN database."""
    src = tmp_path_factory.mktemp("src")
    out = {
        "city1": build_city(src / "city1.mmdb", database_type="DBIP-City-Lite"),
        "city2": build_city(
            src / "city2.mmdb",
            [("192.0.2.0/24", "FR", "EU", 48.86, 2.35)],
            database_type="DBIP-City-Lite",
        ),
        "asn": build_asn(src / "asn.mmdb", database_type="DBIP-ASN-Lite"),
    }
    return {name: path.read_bytes() for name, path in out.items()}


def settings_for(server: FileServer, dest: Path) -> Settings:
    return Settings(
        geoip_dir=dest,
        geoip_city_url=server.url(CITY_TEMPLATE),
        geoip_asn_url=server.url(ASN_TEMPLATE),
    )


def publish(server: FileServer, month: str, city: bytes, asn: bytes) -> None:
    server.add(f"/city-{month}.mmdb.gz", gzip.compress(city))
    server.add(f"/asn-{month}.mmdb.gz", gzip.compress(asn))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def test_fetch_installs_this_months_databases(
    server: FileServer, databases: dict[str, bytes], tmp_path: Path
) -> None:
    dest = tmp_path / "geoip"
    publish(server, "2024-05", databases["city1"], databases["asn"])
    installed = fetch_databases(settings_for(server, dest), clock=clock)

    city, asn = dest / "dbip-city-lite.mmdb", dest / "dbip-asn-lite.mmdb"
    assert [(i.kind, i.path, i.url) for i in installed] == [
        ("city", city, server.url("/city-2024-05.mmdb.gz")),
        ("ASN", asn, server.url("/asn-2024-05.mmdb.gz")),
    ]
    assert installed[0].database_type == "DBIP-City-Lite"
    assert installed[0].size == len(databases["city1"])
    assert city.read_bytes() == databases["city1"]
    assert asn.read_bytes() == databases["asn"]
    assert stat.S_IMODE(city.stat().st_mode) == 0o644
    assert leftovers(dest) == []
    geo = GeoLocator(city, asn)
    location = geo.locate(ipaddress.ip_address("192.0.2.1"))
    assert (location.country, location.asn) == ("DE", 64500)
    assert geo.attribution() == "IP Geolocation by DB-IP (https://db-ip.com)"


def test_fetch_falls_back_to_last_month_on_404(
    server: FileServer, databases: dict[str, bytes], tmp_path: Path
) -> None:
    publish(server, "2024-04", databases["city1"], databases["asn"])
    installed = fetch_databases(settings_for(server, tmp_path), clock=clock)
    assert [i.url.rsplit("/", 1)[1] for i in installed] == [
        "city-2024-04.mmdb.gz",
        "asn-2024-04.mmdb.gz",
    ]
    assert server.requests[:2] == ["/city-2024-05.mmdb.gz", "/city-2024-04.mmdb.gz"]


def test_month_urls() -> None:
    january = datetime(2025, 1, 3, tzinfo=UTC)
    assert month_urls("x-{year}-{month:02d}", january) == ["x-2025-01", "x-2024-12"]
    assert month_urls("https://example.org/fixed.mmdb", january) == [
        "https://example.org/fixed.mmdb"
    ]
    with pytest.raises(GeoIPError, match="bad GeoIP URL template"):
        month_urls("x-{yaer}", january)


def test_fetch_404_both_months_is_a_clear_error(
    server: FileServer, databases: dict[str, bytes], tmp_path: Path
) -> None:
    server.add("/asn-2024-05.mmdb.gz", gzip.compress(databases["asn"]))
    with pytest.raises(GeoIPError) as info:
        fetch_databases(settings_for(server, tmp_path), clock=clock)
    message = str(info.value)
    assert "\n" not in message
    assert "city-2024-05.mmdb.gz or " in message and "city-2024-04.mmdb.gz" in message
    assert list(tmp_path.iterdir()) == []


def install_v1(server: FileServer, databases: dict[str, bytes], dest: Path) -> Settings:
    settings = settings_for(server, dest)
    publish(server, "2024-04", databases["city1"], databases["asn"])
    fetch_databases(settings, clock=clock)
    return settings


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(gzip.compress(b"not an mmdb at all" * 1000), id="garbage"),
        pytest.param(gzip.compress(b""), id="empty"),
        pytest.param(b"\x1f\x8b\x08\x00garbage", id="bad-gzip"),
    ],
)
def test_corrupt_download_keeps_the_old_files(
    server: FileServer, databases: dict[str, bytes], tmp_path: Path, body: bytes
) -> None:
    settings = install_v1(server, databases, tmp_path)
    publish(server, "2024-05", databases["city2"], databases["asn"])
    server.add("/city-2024-05.mmdb.gz", body)
    with pytest.raises(GeoIPError, match="city-2024-05"):
        fetch_databases(settings, clock=clock)
    assert (tmp_path / "dbip-city-lite.mmdb").read_bytes() == databases["city1"]
    assert leftovers(tmp_path) == []


def test_truncated_gzip_is_refused(
    server: FileServer, databases: dict[str, bytes], tmp_path: Path
) -> None:
    settings = install_v1(server, databases, tmp_path)
    publish(server, "2024-05", databases["city2"], databases["asn"])
    whole = gzip.compress(databases["city2"])
    server.add("/city-2024-05.mmdb.gz", whole[: len(whole) // 2])
    with pytest.raises(GeoIPError, match="truncated"):
        fetch_databases(settings, clock=clock)
    assert (tmp_path / "dbip-city-lite.mmdb").read_bytes() == databases["city1"]


def test_bad_asn_keeps_both_old_files(
    server: FileServer, databases: dict[str, bytes], tmp_path: Path
) -> None:
    settings = install_v1(server, databases, tmp_path)
    publish(server, "2024-05", databases["city2"], b"junk")
    with pytest.raises(GeoIPError, match="not a usable GeoIP ASN database"):
        fetch_databases(settings, clock=clock)
    # the good new city file was not installed on its own either
    assert (tmp_path / "dbip-city-lite.mmdb").read_bytes() == databases["city1"]
    assert leftovers(tmp_path) == []


def test_server_error(server: FileServer, tmp_path: Path) -> None:
    server.add("/city-2024-05.mmdb.gz", b"oops", status=500)
    with pytest.raises(GeoIPError, match="HTTP 500"):
        fetch_databases(settings_for(server, tmp_path), clock=clock)
    assert list(tmp_path.iterdir()) == []


def test_size_cap(server: FileServer, databases: dict[str, bytes], tmp_path: Path) -> None:
    publish(server, "2024-05", databases["city1"], databases["asn"])
    with pytest.raises(GeoIPError, match="more than 1000 bytes"):
        fetch_databases(settings_for(server, tmp_path), clock=clock, max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


def test_connection_refused(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = Settings(
        geoip_dir=tmp_path,
        geoip_city_url=f"http://127.0.0.1:{port}/c.mmdb.gz",
        geoip_asn_url=f"http://127.0.0.1:{port}/a.mmdb.gz",
    )
    with pytest.raises(GeoIPError, match="cannot download"):
        fetch_databases(settings, clock=clock)


def test_plain_and_multi_member_and_pre_decoded_bodies(
    server: FileServer, databases: dict[str, bytes], tmp_path: Path
) -> None:
    city, asn = databases["city1"], databases["asn"]
    server.add("/plain.mmdb", city)  # no .gz: stored as is
    half = len(asn) // 2
    server.add("/asn.mmdb.gz", gzip.compress(asn[:half]) + gzip.compress(asn[half:]))
    server.add(  # a server that sends a .gz with Content-Encoding: httpx decodes it
        "/encoded.mmdb.gz", gzip.compress(city), headers={"Content-Encoding": "gzip"}
    )
    settings = settings_for(server, tmp_path)
    fetch_databases(
        settings, city_url=server.url("/plain.mmdb"), asn_url=server.url("/asn.mmdb.gz")
    )
    assert (tmp_path / "dbip-city-lite.mmdb").read_bytes() == city
    assert (tmp_path / "dbip-asn-lite.mmdb").read_bytes() == asn
    fetch_databases(
        settings,
        city_url=server.url("/encoded.mmdb.gz"),
        asn_url=server.url("/asn.mmdb.gz"),
        dest=tmp_path / "d",
    )
    assert (tmp_path / "d" / "dbip-city-lite.mmdb").read_bytes() == city


def test_configured_paths_are_used(tmp_path: Path) -> None:
    settings = Settings(geoip_dir=tmp_path / "dir", geoip_city_db=tmp_path / "mine.mmdb")
    assert destination_paths(settings) == (tmp_path / "mine.mmdb", settings.geoip_asn_path)
    assert settings.geoip_asn_path == tmp_path / "dir" / "dbip-asn-lite.mmdb"
    assert destination_paths(settings, tmp_path / "x") == (
        tmp_path / "x" / "dbip-city-lite.mmdb",
        tmp_path / "x" / "dbip-asn-lite.mmdb",
    )


def test_running_locator_picks_up_the_new_file(
    server: FileServer, databases: dict[str, bytes], tmp_path: Path
) -> None:
    settings = install_v1(server, databases, tmp_path)
    geo = GeoLocator(settings.geoip_city_path, settings.geoip_asn_path)
    assert geo.locate(ipaddress.ip_address("192.0.2.1")).country == "DE"

    publish(server, "2024-05", databases["city2"], databases["asn"])
    fetch_databases(settings, clock=clock)
    assert geo.maybe_reload(force=True) is True
    assert geo.locate(ipaddress.ip_address("192.0.2.1")).country == "FR"
    assert geo.locate(ipaddress.ip_address("192.0.2.1")).asn == 64500


def run_cli(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser()
    geoip_cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args, settings)
    return code


def test_cli_fetch(
    server: FileServer,
    databases: dict[str, bytes],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    server.add("/c.mmdb.gz", gzip.compress(databases["city1"]))
    server.add("/a.mmdb.gz", gzip.compress(databases["asn"]))
    argv = ["geoip", "fetch", "--city-url", server.url("/c.mmdb.gz")]
    argv += ["--asn-url", server.url("/a.mmdb.gz"), "--dest", str(tmp_path / "out")]
    assert run_cli(argv, Settings(geoip_dir=tmp_path / "unused")) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"installed city database {tmp_path / 'out'}/dbip-city-lite.mmdb")
    assert "(DBIP-City-Lite, built " in lines[0]
    assert lines[1].startswith("installed ASN database")
    assert not (tmp_path / "unused").exists()
