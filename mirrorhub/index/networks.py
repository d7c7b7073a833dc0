"""Which mirrors' own networks contain a client address."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from mirrorhub.domain import IPAddress
from mirrorhub.selection.ranking import MirrorSlot


class NetworkTable:
    """Which mirrors' networks contain an address: one dict per (family, prefix length)."""

    def __init__(self, slots: Sequence[MirrorSlot]) -> None:
        tables: dict[tuple[int, int], dict[int, list[int]]] = {}
        for slot in slots:
            for net in slot.mirror.networks:
                key = (net.version, net.prefixlen)
                tables.setdefault(key, {}).setdefault(int(net.network_address), []).append(slot.idx)
        self._tables = [
            (version, 32 if version == 4 else 128, plen, {k: tuple(v) for k, v in t.items()})
            for (version, plen), t in sorted(tables.items())
        ]

    def members(self, address: IPAddress) -> frozenset[int]:
        if not self._tables:
            return frozenset()
        value = int(address)
        found: set[int] = set()
        for version, bits, plen, table in self._tables:
            if version != address.version:
                continue
            shift = bits - plen
            hit = table.get((value >> shift) << shift)
            if hit:
                found.update(hit)
        return frozenset(found)


def parse_address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
