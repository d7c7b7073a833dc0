"""RFC 5854 rules for the generated ``.meta4``: namespace, relative name, size, hash, URLs."""

from __future__ import annotations

import hashlib
import ipaddress
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrorhub import metalink
from mirrorhub.domain import Candidate, Client, Decision, Mirror, Options, OriginFile, Tier
from mirrorhub.metalink import NS, MetalinkUrl

SHA = hashlib.sha256(b"x").hexdigest()
Q = f"{{{NS}}}"
HOSTILE = [
    "a b.iso",
    "ünïcödé-€-日本.iso",
    "&amp;<>\"'.iso",
    'x" type="md5"><file name="y',
    "]]><!-- -->.iso",
    "a:b.iso",
]


def parse(doc: bytes) -> ET.Element:
    assert doc.startswith(b"<?xml version='1.0' encoding='UTF-8'?>")
    root = ET.fromstring(doc)  # noqa: S314 (our own output, under test)
    assert root.tag == Q + "metalink"  # the RFC 5854 namespace, as the default namespace
    assert b'<metalink xmlns="urn:ietf:params:xml:ns:metalink">' in doc
    return root


def check_rfc5854(doc: bytes) -> ET.Element:
    """The rules of RFC 5854 section 4 that a client relies on; returns the one <file>."""
    root = parse(doc)
    files = root.findall(Q + "file")
    assert len(files) == 1
    f = files[0]
    name = f.get("name")
    assert name and not name.startswith("/") and "/" not in name and name not in (".", "..")
    sizes = f.findall(Q + "size")
    assert len(sizes) == 1 and sizes[0].text is not None and sizes[0].text.isdigit()
    for h in f.findall(Q + "hash"):
        assert h.get("type") == "sha-256"  # IANA hash name
        assert h.text is not None and len(h.text) == 64 and int(h.text, 16) >= 0
    urls = f.findall(Q + "url")
    assert urls, "a file needs at least one url"
    for u in urls:
        assert 1 <= int(u.get("priority", "1")) <= 999999
        loc = u.get("location")
        assert loc is None or (len(loc) == 2 and loc.isalpha() and loc.islower())
        assert u.text is not None and u.text.startswith(("http://", "https://"))
    return f


@pytest.mark.parametrize("name", HOSTILE)
def test_names_with_spaces_unicode_and_markup_round_trip(name: str) -> None:
    urls = [MetalinkUrl("http://m.example/a%20b.iso", "DE", 1)]
    f = check_rfc5854(metalink.build(name, 123, SHA, urls))
    assert f.get("name") == name  # exactly the name, escaped on the wire, nothing injected
    assert [u.text for u in f.findall(Q + "url")] == ["http://m.example/a%20b.iso"]
    assert f.findtext(Q + "size") == "123"
    assert f.findtext(Q + "hash") == SHA


@given(st.text(min_size=1, max_size=40))
def test_any_text_is_either_refused_or_round_trips(text: str) -> None:
    try:
        name = metalink.file_name("pub/" + text)
    except ValueError:
        return
    f = check_rfc5854(metalink.build(name, 1, None, [MetalinkUrl("http://m.example/x", None, 1)]))
    assert f.get("name") == name


@pytest.mark.parametrize("path", ["pub/", "pub/..", "pub/.", "a\\b", "x\x00y", "x\ufffey"])
def test_unsafe_names_are_refused(path: str) -> None:
    with pytest.raises(ValueError):
        metalink.file_name(path)


def test_name_is_the_last_segment_only() -> None:
    assert metalink.file_name("pub/iso/x.iso") == "x.iso"
    with pytest.raises(ValueError):
        metalink.build("pub/x.iso", 1, None, [MetalinkUrl("http://m/x", None, 1)])


def test_priorities_locations_and_bad_input() -> None:
    urls = [
        MetalinkUrl("http://a.example/x", "DE", 0),
        MetalinkUrl("http://b.example/x", "us", 5_000_000),
        MetalinkUrl("http://c.example/x", "not a country", 2),
    ]
    f = check_rfc5854(metalink.build("x", 0, None, urls, origin="https://dl.example/x.meta4"))
    got = [(u.get("location"), u.get("priority")) for u in f.findall(Q + "url")]
    assert got == [("de", "1"), ("us", "999999"), (None, "2")]
    assert f.find(Q + "hash") is None  # no hash known: no element rather than a wrong one
    root = parse(metalink.build("x", 0, None, urls, origin="https://dl.example/x.meta4"))
    origin = root.find(Q + "origin")
    assert origin is not None and origin.get("dynamic") == "true"
    for bad in [
        lambda: metalink.build("x", -1, None, urls),
        lambda: metalink.build("x", 1, "zz" * 32, urls),
        lambda: metalink.build("x", 1, "ab", urls),
        lambda: metalink.build("x", 1, None, []),
        lambda: metalink.build("x", 1, None, [MetalinkUrl("http://a/\x01", None, 1)]),
    ]:
        with pytest.raises(ValueError):
            bad()


def _decision(chosen: bool, outdated: bool = False) -> Decision:
    de = Mirror(1, "de", "http://de.example/", None, country="DE")
    us = Mirror(2, "us", "http://us.example/", None, country="US")
    f = OriginFile("pub/x.iso", 10, 1, SHA, 1.0)
    ranked = (
        Candidate(de, "http://de.example/pub/x.iso", Tier.COUNTRY, 1.0, 1.0, outdated),
        Candidate(us, "http://us.example/pub/x.iso", Tier.WORLD, 9.0, 0.0, outdated),
    )
    client = Client(ipaddress.ip_address("192.0.2.1"))
    return Decision("pub/x.iso", f, client, Options(), ranked[0] if chosen else None, ranked, ())


def test_urls_follow_the_decision_and_put_the_origin_last() -> None:
    urls = metalink.urls_for(_decision(True), "https://origin.example/pub/x.iso")
    assert [(u.url, u.location, u.priority) for u in urls] == [
        ("http://de.example/pub/x.iso", "DE", 1),
        ("http://us.example/pub/x.iso", "US", 2),
        ("https://origin.example/pub/x.iso", None, 3),
    ]
    # The origin serves it (origin-only, too small...): no mirror in the document either.
    assert [u.url for u in metalink.urls_for(_decision(False), "https://o/x")] == ["https://o/x"]
    # Copies that may be the previous version would poison a segmented download.
    assert metalink.urls_for(_decision(True, outdated=True), None) == []
