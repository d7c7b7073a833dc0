"""Where is the client: mmdb lookups (GeoLite2 / DB-IP city and ASN), and distance.

This module runs on every request, so it imports only the standard library, ``maxminddb``,
:mod:`mirrorhub.domain`, :mod:`mirrorhub.countries` and :mod:`mirrorhub.proxies` (who the
client is: its address behind trusted proxies).
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import maxminddb

from mirrorhub import countries
from mirrorhub.domain import IPAddress, Location
from mirrorhub.errors import GeoIPError
from mirrorhub.proxies import normalise

log = logging.getLogger(__name__)

EARTH_RADIUS_KM = 6371.0
_EMPTY = Location()


# --- distance ----------------------------------------------------------------------------


def distance_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance (haversine, spherical Earth of radius 6371 km)."""
    phi1 = math.radians(lat1)
    phi2 = math.radians(lat2)
    dphi = phi2 - phi1
    dlambda = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlambda / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h)))


# --- mmdb lookups ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Attribution:
    """A licence notice that pages showing geolocation results must carry."""

    text: str
    url: str


DBIP_ATTRIBUTION = Attribution("IP Geolocation by DB-IP", "https://db-ip.com")
GEOLITE2_ATTRIBUTION = Attribution(
    "This product includes GeoLite2 data created by MaxMind, available from "
    "https://www.maxmind.com",
    "https://www.maxmind.com",
)

_Signature = tuple[int, int, int, int]


def _signature(path: Path) -> _Signature | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino, st.st_dev)


def open_reader(path: Path) -> maxminddb.Reader:
    """Open an mmdb file with the C extension when available.

    Raises OSError, ValueError or ``InvalidDatabaseError`` (a RuntimeError) as they come;
    callers translate them.
    """
    return maxminddb.open_database(os.fspath(path), maxminddb.MODE_AUTO)


class _Database:
    """One watched mmdb file: its reader and the stat signature it was opened from."""

    __slots__ = ("kind", "path", "reader", "rejected", "signature")

    def __init__(self, kind: str, path: Path) -> None:
        self.kind = kind
        self.path = path
        self.reader: maxminddb.Reader | None = None
        self.signature: _Signature | None = None
        self.rejected: _Signature | None = None  # a bad file we already warned about

    def refresh(self) -> bool:
        """Open the file again if it changed; keep the old reader when the new one is bad."""
        signature = _signature(self.path)
        if signature is None or signature in (self.signature, self.rejected):
            return False  # unchanged, or gone (the mapped old file stays valid)
        try:
            reader = open_reader(self.path)
        except (OSError, ValueError, RuntimeError) as exc:
            self.rejected = signature
            log.warning(
                "GeoIP %s database %s cannot be opened (%s); %s",
                self.kind,
                self.path,
                exc,
                "keeping the previous one" if self.reader else "no data until it is fixed",
            )
            return False
        # No close() of the old reader: a lookup on another thread may still hold it, and
        # the C reader unmaps itself when the last reference goes.
        self.reader = reader
        self.signature = signature
        self.rejected = None
        log.info("GeoIP %s database loaded from %s", self.kind, self.path)
        return True


def _get(reader: maxminddb.Reader, address: IPAddress) -> Mapping[str, object] | None:
    try:
        record = reader.get(address)
    except ValueError:  # e.g. an IPv6 address in an IPv4-only database
        return None
    except RuntimeError as exc:  # InvalidDatabaseError: a corrupt data section
        log.debug("GeoIP lookup of %s failed: %s", address, exc)
        return None
    return record if isinstance(record, dict) else None


def _code(record: Mapping[str, object], key: str, field: str) -> str | None:
    part = record.get(key)
    if not isinstance(part, dict):
        return None
    value = part.get(field)
    if not isinstance(value, str) or len(value) != 2 or not value.isascii() or not value.isalpha():
        return None
    return value.upper()


def _coordinate(location: object, field: str, limit: float) -> float | None:
    if not isinstance(location, dict):
        return None
    value = location.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if -limit <= number <= limit else None


def city_fields(
    record: Mapping[str, object],
) -> tuple[str | None, str | None, float | None, float | None]:
    """(country, continent, latitude, longitude) from a GeoLite2/DB-IP city record.

    Falls back to ``registered_country`` when ``country`` is absent, to the country's own
    continent when ``continent`` is absent, and to the country centroid when coordinates are.
    """
    country = _code(record, "country", "iso_code") or _code(
        record, "registered_country", "iso_code"
    )
    continent = _code(record, "continent", "code")
    if continent not in countries.CONTINENTS:
        continent = countries.continent_of(country) if country else None
    location = record.get("location")
    lat = _coordinate(location, "latitude", 90.0)
    lon = _coordinate(location, "longitude", 180.0)
    if lat is None or lon is None:
        lat, lon = (countries.centroid(country) or (None, None)) if country else (None, None)
    return country, continent, lat, lon


def asn_field(record: Mapping[str, object]) -> int | None:
    value = record.get("autonomous_system_number")
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        return None
    return value


class GeoLocator:
    """Looks addresses up in optional city and ASN ``.mmdb`` files, and reloads them.

    A path that is None means "no such data". A configured file that does not exist yet (before
    the first ``mirrorhub geoip fetch``) is waited for: :meth:`maybe_reload` opens it when it
    appears. A configured file that exists but cannot be opened at start-up is an error.
    """

    def __init__(
        self,
        city_db: Path | None,
        asn_db: Path | None,
        *,
        cache_size: int = 4096,
        check_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._databases = tuple(
            _Database(kind, Path(path))
            for kind, path in (("city", city_db), ("ASN", asn_db))
            if path is not None
        )
        self._city = next((db for db in self._databases if db.kind == "city"), None)
        self._asn = next((db for db in self._databases if db.kind == "ASN"), None)
        self._cache_size = cache_size
        self._check_interval = check_interval
        self._clock = clock
        for db in self._databases:
            if _signature(db.path) is None:
                log.warning("GeoIP %s database %s does not exist (yet)", db.kind, db.path)
                continue
            try:
                db.reader = open_reader(db.path)
            except (OSError, ValueError, RuntimeError) as exc:
                raise GeoIPError(
                    f"GeoIP {db.kind} database {db.path} cannot be opened: {exc}"
                ) from exc
            db.signature = _signature(db.path)
        self._next_check = clock() + check_interval
        self._cached = functools.lru_cache(maxsize=cache_size)(self._lookup)

    @property
    def enabled(self) -> bool:
        return any(db.reader is not None for db in self._databases)

    def locate(self, address: IPAddress) -> Location:
        """Country, continent, coordinates and AS of ``address``; empty when unknown."""
        if not self._databases:
            return _EMPTY
        return self._cached(normalise(address))

    def _lookup(self, address: IPAddress) -> Location:
        country: str | None = None
        continent: str | None = None
        lat: float | None = None
        lon: float | None = None
        asn: int | None = None
        city = self._city.reader if self._city else None
        if city is not None:
            record = _get(city, address)
            if record is not None:
                country, continent, lat, lon = city_fields(record)
        asn_reader = self._asn.reader if self._asn else None
        if asn_reader is not None:
            record = _get(asn_reader, address)
            if record is not None:
                asn = asn_field(record)
        if country is None and asn is None and lat is None:
            return _EMPTY
        return Location(country, continent, lat, lon, asn)

    def maybe_reload(self, *, force: bool = False) -> bool:
        """Re-open databases whose files changed (a stat each, at most every check_interval).

        Returns True when a new database was swapped in. A new file that fails to open is
        logged once and the previous reader stays in use.
        """
        now = self._clock()
        if not force and now < self._next_check:
            return False
        self._next_check = now + self._check_interval
        changed = False
        for db in self._databases:
            changed |= db.refresh()
        if changed:
            self._cached = functools.lru_cache(maxsize=self._cache_size)(self._lookup)
        return changed

    def attributions(self) -> tuple[Attribution, ...]:
        """Licence notices required by the databases in use (DB-IP Lite, GeoLite2)."""
        found: list[Attribution] = []
        for db in self._databases:
            if db.reader is None:
                continue
            metadata = db.reader.metadata()
            notice = _attribution_for(metadata.database_type, metadata.description)
            if notice is not None and notice not in found:
                found.append(notice)
        return tuple(found)

    def attribution(self) -> str | None:
        """The notices as one line of text (``text (url)`` for DB-IP), or None."""
        parts = [
            notice.text if notice.url in notice.text else f"{notice.text} ({notice.url})"
            for notice in self.attributions()
        ]
        return "; ".join(parts) or None

    def close(self) -> None:
        for db in self._databases:
            if db.reader is not None:
                db.reader.close()
                db.reader = None
        self._cached = functools.lru_cache(maxsize=self._cache_size)(self._lookup)


def _attribution_for(database_type: object, description: object) -> Attribution | None:
    """Tell DB-IP from GeoLite2 by the metadata's type and description texts."""
    texts = [str(database_type or "")]
    if isinstance(description, dict):
        texts.extend(str(v) for v in description.values())
    blob = " ".join(texts).lower()
    if "dbip" in blob or "db-ip" in blob:
        return DBIP_ATTRIBUTION
    if "geolite" in blob:
        return GEOLITE2_ATTRIBUTION
    return None
