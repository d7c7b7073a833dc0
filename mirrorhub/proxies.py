"""Who is the client: its address behind trusted proxies (on every request).

Imports only the standard library and :mod:`mirrorhub.domain`.

The rules (:func:`resolve_client`):

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
from collections.abc import Sequence
from dataclasses import dataclass

from mirrorhub.domain import IPAddress, IPNetwork

UNSPECIFIED: IPAddress = ipaddress.IPv4Address(0)
_PROTOS = frozenset({"http", "https"})


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
