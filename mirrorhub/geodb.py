"""Write small ``.mmdb`` files in the GeoLite2 / DB-IP layouts (for ``mirrorhub demo`` and tests).

The files are IPv6 databases with IPv4 stored under ``::/96`` (``::a.b.c.d``), as MaxMind and
DB-IP do; readers find IPv4 addresses there. ``mmdb-writer`` does not alias
``::ffff:a.b.c.d`` to that subtree, so lookups must normalise IPv4-mapped addresses first
(:func:`mirrorhub.proxies.normalise` does).

Files are written to a temporary name and renamed into place: a reader may have the old file
memory-mapped, and rewriting a mapped file in place can crash that process.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from mmdb_writer import MMDBWriter
from netaddr import IPSet

CityEntry = tuple[str, str | None, str | None, float | None, float | None]
AsnEntry = tuple[str, int, str | None]


def city_record(
    country: str | None, continent: str | None, lat: float | None, lon: float | None
) -> dict[str, Any]:
    """A GeoLite2-City shaped record; fields that are None are left out."""
    record: dict[str, Any] = {}
    if country:
        record["country"] = {"iso_code": country.upper(), "names": {"en": country.upper()}}
    if continent:
        record["continent"] = {"code": continent.upper()}
    if lat is not None and lon is not None:
        record["location"] = {"latitude": float(lat), "longitude": float(lon)}
    return record


def asn_record(asn: int, org: str | None) -> dict[str, Any]:
    record: dict[str, Any] = {"autonomous_system_number": asn}
    if org:
        record["autonomous_system_organization"] = org
    return record


def write_city_db(
    path: Path | str,
    entries: Iterable[CityEntry],
    *,
    database_type: str = "mirrorhub-test-City",
    description: str = "mirrorhub test city database",
) -> None:
    """Write ``(cidr, country, continent, lat, lon)`` entries as a city database."""
    _write(
        Path(path),
        ((cidr, city_record(cc, cont, lat, lon)) for cidr, cc, cont, lat, lon in entries),
        database_type,
        description,
    )


def write_asn_db(
    path: Path | str,
    entries: Iterable[AsnEntry],
    *,
    database_type: str = "mirrorhub-test-ASN",
    description: str = "mirrorhub test ASN database",
) -> None:
    """Write ``(cidr, asn, organisation)`` entries as an ASN database."""
    _write(
        Path(path),
        ((cidr, asn_record(asn, org)) for cidr, asn, org in entries),
        database_type,
        description,
    )


def _write(
    path: Path,
    records: Iterable[tuple[str, dict[str, Any]]],
    database_type: str,
    description: str,
) -> None:
    parsed = [(ipaddress.ip_network(cidr, strict=False), record) for cidr, record in records]
    # mmdb-writer replaces a subtree when a supernet is inserted after one of its subnets,
    # so insert wider networks first (IPv4 sorts before IPv6, each by prefix length).
    parsed.sort(key=lambda item: (item[0].version, item[0].prefixlen))
    writer = MMDBWriter(
        ip_version=6,
        ipv4_compatible=True,
        database_type=database_type,
        languages=["en"],
        description=description,
    )
    for network, record in parsed:
        writer.insert_network(IPSet([str(network)]), record)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        writer.to_db_file(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
