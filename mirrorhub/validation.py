"""Parse and normalise user input for a mirror (CLI options, admin forms, API bodies).

Pure: no I/O. Every entry point funnels through here so a mirror can only be stored in its
canonical form:

* names are case-insensitive on input and stored in lower case;
* base URLs are rebuilt from their parsed parts (lower-case scheme and host, no default port,
  path ending in ``/``); anything that could turn a pasted URL into an open redirect or markup
  (userinfo, query, fragment, backslashes, quotes, spaces) is refused;
* country and continent codes are upper case, scope prefixes have no leading ``/`` and end in
  ``/``.

Errors are collected: :class:`~mirrorhub.errors.ValidationError` names every bad field at once.
"""

from __future__ import annotations

import dataclasses
import importlib
import ipaddress
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from mirrorhub.domain import IPNetwork
from mirrorhub.errors import ValidationError

CONTINENTS = frozenset({"AF", "AN", "AS", "EU", "NA", "OC", "SA"})
MAX_URL = 512  # the column width
MAX_CONTACT = 256
MAX_NOTES = 4000
MAX_NETWORKS = 1000
MAX_SCOPE = 200
MAX_CAPACITY = 100_000_000  # Mbit/s (100 Tbit/s): keeps the value in a 32-bit column
MAX_ASN = 4_294_967_295
DEFAULT_PORTS = {"http": 80, "https": 443, "rsync": 873}

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# RFC 3986 path characters minus the quote, which has no business in a mirror's base path.
_PATH = re.compile(r"[A-Za-z0-9._~!$&()*+,;=:@/%-]*")
_PCT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CC = re.compile(r"[A-Z]{2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


@dataclass(frozen=True, slots=True)
class MirrorInput:
    """A mirror's user-editable fields, validated and normalised."""

    name: str
    http_url: str | None = None
    https_url: str | None = None
    rsync_url: str | None = None
    country: str | None = None
    continent: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    asn: int | None = None
    networks: tuple[IPNetwork, ...] = ()
    capacity: int = 1000
    enabled: bool = True
    only_own_networks: bool = False
    only_own_asn: bool = False
    only_own_country: bool = False
    only_own_continent: bool = False
    excluded_countries: frozenset[str] = frozenset()
    scope: tuple[str, ...] = ()
    contact: str = ""
    notes: str = ""


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(MirrorInput))
# Fields that may be cleared with None or "" (falling back to their default).
CLEARABLE = frozenset(FIELDS) - {
    "name",
    "capacity",
    "enabled",
    "only_own_networks",
    "only_own_asn",
    "only_own_country",
    "only_own_continent",
}


# --- single-field parsers: each takes a stripped, non-empty string and raises ValueError ---


def parse_name(value: str) -> str:
    name = value.lower()
    if not _NAME.fullmatch(name):
        raise ValueError(
            "1 to 64 characters: letters, digits, '.', '_' or '-', starting with a letter or digit"
        )
    return name


def parse_base_url(value: str, scheme: str, *, allow_private: bool = False) -> str:
    """A mirror's base URL for ``scheme``, rebuilt in canonical form and ending in ``/``."""
    if _CONTROL.search(value) or " " in value or "\\" in value:
        raise ValueError("must not contain spaces, control characters or backslashes")
    if not value.lower().startswith(f"{scheme}://"):
        raise ValueError(f"must start with {scheme}://")
    if "?" in value or "#" in value:
        raise ValueError("must not have a query (?) or fragment (#)")
    parts = urlsplit(value)
    if "@" in parts.netloc:
        raise ValueError("must not contain a user name or password (user@)")
    host = _host(parts.netloc, allow_private=allow_private)
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port must be a number from 1 to 65535") from None
    if port == 0 or (port is None and parts.netloc.endswith(":")):
        raise ValueError("the port must be a number from 1 to 65535")
    path = _url_path(parts.path)
    if scheme == "rsync" and path == "/":
        raise ValueError("must name an rsync module (rsync://host/module/)")
    netloc = host if port is None or port == DEFAULT_PORTS[scheme] else f"{host}:{port}"
    url = f"{scheme}://{netloc}{path}"
    if len(url) > MAX_URL:
        raise ValueError(f"at most {MAX_URL} characters")
    return url


def _host(netloc: str, *, allow_private: bool) -> str:
    """The URL's host, lower case, IPv6 literals in brackets."""
    raw = netloc.rsplit(":", 1)[0] if not netloc.endswith("]") else netloc
    if raw.startswith("["):
        if not raw.endswith("]"):
            raise ValueError("malformed IPv6 address")
        try:
            address: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv6Address(
                raw[1:-1]
            )
        except ValueError:
            raise ValueError(f"not an IPv6 address: {raw}") from None
        _check_public(address, allow_private)
        return f"[{address.compressed}]"
    host = raw.lower()
    if not host:
        raise ValueError("a host is required")
    try:
        address = ipaddress.IPv4Address(host)
    except ValueError:
        pass
    else:
        _check_public(address, allow_private)
        return str(address)
    if not host.isascii():
        raise ValueError("write an internationalised host name in its xn-- (punycode) form")
    labels = host.split(".")
    if len(host) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise ValueError(f"not a valid host name: {host!r}")
    if labels[-1].isdigit():
        # Browsers read "1.2.3" or "0x7f.1" style hosts as IPv4 addresses.
        raise ValueError(f"not a valid host name or IPv4 address: {host!r}")
    if not allow_private and (host == "localhost" or host.endswith(".localhost")):
        raise ValueError("points at this machine (set allow_private_mirrors to allow)")
    return host


def _check_public(address: ipaddress.IPv4Address | ipaddress.IPv6Address, allow: bool) -> None:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if not allow and not address.is_global:
        raise ValueError(
            f"{address} is a private, loopback or reserved address "
            "(set allow_private_mirrors to allow)"
        )


def _url_path(path: str) -> str:
    if not path:
        return "/"
    if not _PATH.fullmatch(path) or _PCT.search(path):
        raise ValueError("the path contains characters that must be percent-encoded")
    segments = path.split("/")[1:]
    if any(s.lower() in {".", "..", "%2e", "%2e%2e", ".%2e", "%2e."} for s in segments):
        raise ValueError("the path must not contain '.' or '..' segments")
    if "//" in path:
        raise ValueError("the path must not contain '//'")
    return path if path.endswith("/") else path + "/"


def parse_country(value: str) -> str:
    code = value.upper()
    if not _CC.fullmatch(code):
        raise ValueError("a two-letter ISO 3166-1 country code, e.g. DE")
    table = _countries()
    if table is not None and not table.is_country(code):
        raise ValueError(f"{code} is not an ISO 3166-1 country code")
    return code


def parse_continent(value: str) -> str:
    code = value.upper()
    if code not in CONTINENTS:
        raise ValueError("one of " + " ".join(sorted(CONTINENTS)))
    return code


def _coordinate(limit: float) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise ValueError("not a number") from None
        if not math.isfinite(number) or not -limit <= number <= limit:
            raise ValueError(f"must be between -{limit:g} and {limit:g}")
        return number

    return parse


def parse_asn(value: str) -> int:
    digits = value[2:] if value[:2].upper() == "AS" else value
    if not digits.isdecimal() or not digits.isascii():
        raise ValueError("an AS number such as 64500 or AS64500")
    number = int(digits)
    if not 1 <= number <= MAX_ASN:
        raise ValueError(f"must be between 1 and {MAX_ASN}")
    return number


def _items(value: str) -> list[str]:
    return value.replace(",", " ").split()


def parse_networks(value: str) -> tuple[IPNetwork, ...]:
    nets: list[IPNetwork] = []
    for item in _items(value):
        try:
            net = ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"not an address or CIDR network: {item!r}") from None
        if net not in nets:
            nets.append(net)
    if len(nets) > MAX_NETWORKS:
        raise ValueError(f"at most {MAX_NETWORKS} networks")
    return tuple(nets)


def parse_capacity(value: str) -> int:
    if not value.isdecimal() or not value.isascii():
        raise ValueError("a whole number of Mbit/s")
    number = int(value)
    if not 1 <= number <= MAX_CAPACITY:
        raise ValueError(f"must be between 1 and {MAX_CAPACITY} Mbit/s")
    return number


def parse_bool(value: str) -> bool:
    low = value.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def parse_countries(value: str) -> frozenset[str]:
    codes = set()
    for item in _items(value):
        try:
            codes.add(parse_country(item))
        except ValueError:
            raise ValueError(f"not a two-letter country code: {item!r}") from None
    return frozenset(codes)


def parse_scope(value: str) -> tuple[str, ...]:
    prefixes: list[str] = []
    for item in _items(value):
        if _CONTROL.search(item) or "\\" in item:
            raise ValueError(f"{item!r}: no control characters or backslashes")
        stripped = item.strip("/")
        if not stripped:
            return ()  # "/" is the whole tree, which is what an empty scope means
        segments = stripped.split("/")
        if any(s in ("", ".", "..") for s in segments):
            raise ValueError(f"{item!r}: no empty, '.' or '..' segments")
        prefix = stripped + "/"
        if prefix not in prefixes:
            prefixes.append(prefix)
    if len(prefixes) > MAX_SCOPE:
        raise ValueError(f"at most {MAX_SCOPE} prefixes")
    return tuple(prefixes)


def _text(limit: int, *, multiline: bool) -> Callable[[str], str]:
    pattern = _CONTROL_BUT_NEWLINE if multiline else _CONTROL

    def parse(value: str) -> str:
        text = value.replace("\r\n", "\n") if multiline else value
        if pattern.search(text):
            raise ValueError("must not contain control characters")
        if len(text) > limit:
            raise ValueError(f"at most {limit} characters")
        return text

    return parse


def _parsers(allow_private: bool) -> dict[str, Callable[[str], Any]]:
    def url(scheme: str) -> Callable[[str], str]:
        return lambda v: parse_base_url(v, scheme, allow_private=allow_private)

    return {
        "name": parse_name,
        "http_url": url("http"),
        "https_url": url("https"),
        "rsync_url": url("rsync"),
        "country": parse_country,
        "continent": parse_continent,
        "latitude": _coordinate(90),
        "longitude": _coordinate(180),
        "asn": parse_asn,
        "networks": parse_networks,
        "capacity": parse_capacity,
        "enabled": parse_bool,
        "only_own_networks": parse_bool,
        "only_own_asn": parse_bool,
        "only_own_country": parse_bool,
        "only_own_continent": parse_bool,
        "excluded_countries": parse_countries,
        "scope": parse_scope,
        "contact": _text(MAX_CONTACT, multiline=False),
        "notes": _text(MAX_NOTES, multiline=True),
    }


_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in dataclasses.fields(MirrorInput) if f.name != "name"
}


def parse_mirror_fields(
    fields: Mapping[str, str | None], *, partial: bool = False, allow_private: bool = False
) -> dict[str, Any]:
    """Validate and normalise the given fields.

    Returns normalised values for the keys given; with ``partial=False`` a missing ``name`` is
    an error and missing fields get their defaults. ``None`` or an empty string clears an
    optional field (its default). Only per-field checks happen here; rules that tie fields
    together are in :func:`check_mirror`.
    """
    parsers = _parsers(allow_private)
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    for key, raw in fields.items():
        if key not in parsers:
            errors[key] = "unknown field"
            continue
        text = (raw or "").strip()
        if not text:
            if key in CLEARABLE:
                values[key] = _DEFAULTS[key]
            else:
                errors[key] = "required"
            continue
        try:
            values[key] = parsers[key](text)
        except ValueError as exc:
            errors[key] = str(exc)
    if not partial:
        if "name" not in fields:
            errors["name"] = "required"
        values = {**_DEFAULTS, **values}
    if errors:
        raise ValidationError(errors)
    return values


def check_mirror(mirror: MirrorInput) -> MirrorInput:
    """Check the rules that tie several fields together."""
    errors: dict[str, str] = {}
    if mirror.http_url is None and mirror.https_url is None:
        errors["http_url"] = "an http:// or https:// URL is required"
    if (mirror.latitude is None) != (mirror.longitude is None):
        missing = "latitude" if mirror.latitude is None else "longitude"
        errors[missing] = "give both latitude and longitude, or neither"
    if errors:
        raise ValidationError(errors)
    return mirror


def build_mirror(fields: Mapping[str, str | None], *, allow_private: bool = False) -> MirrorInput:
    """A new mirror from user input."""
    values = parse_mirror_fields(fields, allow_private=allow_private)
    if values.get("country") and not values.get("continent"):
        values["continent"] = continent_of(values["country"])
    return check_mirror(MirrorInput(**values))


def apply_changes(
    current: MirrorInput, changes: Mapping[str, str | None], *, allow_private: bool = False
) -> MirrorInput:
    """``current`` with ``changes`` applied; keys not in ``changes`` are kept."""
    values = parse_mirror_fields(changes, partial=True, allow_private=allow_private)
    if "country" in values and "continent" not in values:
        # A new country without a continent must not keep the old country's continent.
        values["continent"] = continent_of(values["country"]) if values["country"] else None
    return check_mirror(dataclasses.replace(current, **values))


def _countries() -> Any:
    """The optional ``mirrorhub.countries`` table, or None while it does not exist."""
    try:
        return importlib.import_module("mirrorhub.countries")
    except ModuleNotFoundError as exc:
        if exc.name != "mirrorhub.countries":
            raise  # the module is there but broken: say so
        return None


def continent_of(country: str) -> str | None:
    """The continent of a country, when the country table knows it."""
    table = _countries()
    result = table.continent_of(country) if table is not None else None
    return result if isinstance(result, str) and result in CONTINENTS else None
