"""Who the client is: trusted-proxy rules over Forwarded and X-Forwarded-For."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrorhub.domain import IPNetwork
from mirrorhub.proxies import (
    ClientAddress,
    _split_unquoted,
    _split_unquoted_escaped,
    normalise,
    resolve_client,
)

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
