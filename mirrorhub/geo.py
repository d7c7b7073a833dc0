"""Who is the client and where is it: trusted-proxy address resolution, mmdb lookups, distance.

This module runs on every request, so it imports only the standard library, ``maxminddb``,
:mod:`mirrorhub.domain` and :mod:`mirrorhub.countries`.

Client address rules (:func:`resolve_client`):

* The socket peer is the client, unless the peer is inside a trusted proxy network. Headers
  from an untrusted peer are ignored entirely: anyone can send ``X-Forwarded-For``.
* From a trusted peer, the forwarding chain is read from ``Forwarded`` (RFC 7239) when that
  header is present, otherwise from ``X-Forwarded-For``. ``Forwarded`` wins because it is the
  standard and a proxy that writes it does so deliberately; two chains written by different
  proxies cannot be interleaved reliably, so they are never mixed.
* The chain is walked from the right (nearest hop first). Trusted hops are skipped; the first
  untrusted hop is the client. If every hop is trusted, the leftmost one is the client.
* A hop that is not an address (garbage, ``unknown``, an obfuscated ``_identifier``, a missing
  ``for=``) stops the walk: the client is the last address we could vouch for, i.e. the
  nearest trusted hop (or the peer). Unparsable input is never trusted and never crashes.
* ``X-Forwarded-Proto`` / ``proto=`` is returned only for a trusted peer, and only when it is
  ``http`` or ``https``.
* IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) become IPv4 everywhere; a missing or
  unparsable peer becomes ``0.0.0.0``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import maxminddb

from mirrorhub import countries
from mirrorhub.domain import IPAddress, IPNetwork, Location
from mirrorhub.errors import GeoIPError

log = logging.getLogger(__name__)

UNSPECIFIED: IPAddress = ipaddress.IPv4Address(0)
EARTH_RADIUS_KM = 6371.0
_PROTOS = frozenset({"http", "https"})
_EMPTY = Location()


@dataclass(frozen=True, slots=True)
class ClientAddress:
    address: IPAddress
    forwarded_proto: str | None = None


# --- addresses ---------------------------------------------------------------------------


def normalise(address: IPAddress) -> IPAddress:
    """Map ``::ffff:a.b.c.d`` to ``a.b.c.d``; anything else is returned as is."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return mapped
    return address


@functools.lru_cache(maxsize=8192)
def parse_address(text: str) -> IPAddress | None:
    """A bare IPv4/IPv6 address, normalised; None when ``text`` is not one.

    Cached: the same peers and proxies come back constantly, and ``ipaddress`` parsing is
    the expensive part of resolving a client.
    """
    try:
        return normalise(ipaddress.ip_address(text))
    except ValueError:
        return None


def _parse_node(text: str) -> IPAddress | None:
    """One hop of a forwarding chain: ``1.2.3.4``, ``1.2.3.4:80``, ``::1``, ``[::1]``,
    ``[::1]:80``. Ports may be numeric or RFC 7239 obfuscated (``_abc``). None = not an address.
    """
    text = text.strip()
    if not text:
        return None
    if text[0] == "[":
        end = text.find("]")
        if end < 0 or not _valid_port_suffix(text[end + 1 :]):
            return None
        address = parse_address(text[1:end])
        return address if address is not None and address.version == 6 else None
    if text.count(":") == 1:  # IPv4 with a port (a bare IPv6 address has at least two)
        host, _, port = text.partition(":")
        if not _valid_port_suffix(":" + port):
            return None
        address = parse_address(host)
        return address if address is not None and address.version == 4 else None
    return parse_address(text)


def _valid_port_suffix(suffix: str) -> bool:
    if not suffix:
        return True
    if suffix[0] != ":" or len(suffix) < 2:
        return False
    port = suffix[1:]
    if port[0] == "_":  # obfuscated port, RFC 7239 section 6.3
        return all(c.isascii() and (c.isalnum() or c in "._-") for c in port)
    return port.isascii() and port.isdigit() and len(port) <= 5


def _is_trusted(address: IPAddress, trusted: tuple[IPNetwork, ...]) -> bool:
    # ``in`` is simply False across address families.
    return any(address in network for network in trusted)


# --- header parsing (only reached for a trusted peer) ------------------------------------


def _split_unquoted(text: str, sep: str) -> list[str]:
    """Split on ``sep`` outside double-quoted strings (with backslash escapes)."""
    if '"' not in text:
        return text.split(sep)
    if "\\" in text:
        return _split_unquoted_escaped(text, sep)
    # Without escapes, the pieces between quotes alternate outside / inside a string.
    pieces = text.split('"')
    unclosed = len(pieces) % 2 == 0  # an odd number of quotes: the last string never ends
    parts: list[str] = []
    current = ""
    last = len(pieces) - 1
    for index, piece in enumerate(pieces):
        if index % 2:
            current += '"' + piece + ("" if unclosed and index == last else '"')
            continue
        head, *rest = piece.split(sep)
        current += head
        for item in rest:
            parts.append(current)
            current = item
    parts.append(current)
    return parts


def _split_unquoted_escaped(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _unquote(value: str) -> str | None:
    """A token or quoted-string value; None when malformed."""
    if not value.startswith('"'):
        return None if '"' in value or "\\" in value else value
    if len(value) < 2 or not value.endswith('"'):
        return None
    inner = value[1:-1]
    if "\\" not in inner:
        return None if '"' in inner else inner
    out: list[str] = []
    escaped = False
    for char in inner:
        if escaped:
            out.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            return None
        else:
            out.append(char)
    return None if escaped else "".join(out)


def _forwarded_elements(value: str) -> list[dict[str, str] | None]:
    """RFC 7239 elements, left to right; a malformed element is None."""
    elements: list[dict[str, str] | None] = []
    for raw in _split_unquoted(value, ","):
        if not raw.strip():
            continue  # tolerate empty list items ("a, , b"), as RFC 7230 lists allow
        pairs: dict[str, str] = {}
        for pair in _split_unquoted(raw, ";"):
            if not pair.strip():
                continue  # a stray ";" is harmless
            name, eq, val = pair.strip().partition("=")
            unquoted = _unquote(val.strip()) if eq else None
            if not name or unquoted is None or name.strip() != name:
                break
            pairs.setdefault(name.lower(), unquoted)
        else:
            elements.append(pairs)
            continue
        elements.append(None)
    return elements


def _proto(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip().lower()
    return value if value in _PROTOS else None


def _walk(hops: Sequence[IPAddress | None], trusted: tuple[IPNetwork, ...]) -> int | None:
    """Index of the client hop in ``hops``; None means the peer itself.

    Walk from the right, skipping trusted hops; stop at the first untrusted one. A hop that is
    None (not an address) stops the walk at the last trusted address seen.
    """
    chosen: int | None = None
    for index in range(len(hops) - 1, -1, -1):
        hop = hops[index]
        if hop is None:
            return chosen
        chosen = index
        if not _is_trusted(hop, trusted):
            return index
    return chosen


def resolve_client(
    peer: str | None,
    headers: Sequence[tuple[bytes, bytes]],
    trusted: tuple[IPNetwork, ...],
) -> ClientAddress:
    """The client of a request, following the module's rules for trusted proxies."""
    address = parse_address(peer) if peer else None
    if address is None:
        return ClientAddress(UNSPECIFIED)
    if not trusted or not _is_trusted(address, trusted):
        return ClientAddress(address)

    forwarded: list[str] = []
    xff: list[str] = []
    xfp: list[str] = []
    for name, value in headers:
        if name == b"forwarded":
            forwarded.append(value.decode("latin-1"))
        elif name == b"x-forwarded-for":
            xff.append(value.decode("latin-1"))
        elif name == b"x-forwarded-proto":
            xfp.append(value.decode("latin-1"))

    if forwarded:
        elements = _forwarded_elements(",".join(forwarded))
        hops = [
            _parse_node(element["for"]) if element is not None and "for" in element else None
            for element in elements
        ]
        index = _walk(hops, trusted)
        if index is None:
            # No usable hop: the peer is the client; the nearest element's proto is its own.
            last = elements[-1] if elements else None
            return ClientAddress(address, _proto(last.get("proto")) if last else None)
        element = elements[index]
        hop = hops[index]
        assert element is not None and hop is not None
        return ClientAddress(hop, _proto(element.get("proto")))

    proto_values = [p for p in ",".join(xfp).split(",") if p.strip()] if xfp else []
    if not xff:
        return ClientAddress(address, _proto(proto_values[-1]) if proto_values else None)
    entries = [entry for entry in ",".join(xff).split(",") if entry.strip()]
    hops = [_parse_node(entry) for entry in entries]
    index = _walk(hops, trusted)
    client = address if index is None else hops[index]
    assert client is not None
    # Proxies that append to both headers keep them aligned; otherwise the rightmost
    # value is the one our trusted peer vouches for.
    if not proto_values:
        proto = None
    elif len(proto_values) == len(entries) and index is not None:
        proto = _proto(proto_values[index])
    else:
        proto = _proto(proto_values[-1])
    return ClientAddress(client, proto)


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
