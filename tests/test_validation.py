"""Mirror input validation: table-driven, hostile inputs included."""

from __future__ import annotations

import ipaddress

import pytest

from mirrorhub.errors import ValidationError
from mirrorhub.validation import (
    MirrorInput,
    apply_changes,
    build_mirror,
    parse_base_url,
    parse_mirror_fields,
)


@pytest.mark.parametrize(
    ("raw", "scheme", "expected"),
    [
        ("http://m.example/pub/", "http", "http://m.example/pub/"),
        ("http://m.example/pub", "http", "http://m.example/pub/"),  # trailing slash added
        ("http://m.example", "http", "http://m.example/"),
        ("HTTP://M.Example/Pub/", "http", "http://m.example/Pub/"),  # path case kept
        ("http://m.example:8080/pub/", "http", "http://m.example:8080/pub/"),  # ports work
        ("http://m.example:80/pub/", "http", "http://m.example/pub/"),  # default port dropped
        ("https://m.example:443/", "https", "https://m.example/"),
        ("https://m.example:8443/a/b", "https", "https://m.example:8443/a/b/"),
        ("http://[2a00:1450::1]:8080/", "http", "http://[2a00:1450::1]:8080/"),
        ("http://[2A00:1450:0::1]/x", "http", "http://[2a00:1450::1]/x/"),
        ("http://93.184.215.14/pub", "http", "http://93.184.215.14/pub/"),
        ("rsync://m.example/debian", "rsync", "rsync://m.example/debian/"),
        ("rsync://m.example:873/debian/", "rsync", "rsync://m.example/debian/"),
        ("http://xn--mnchen-3ya.example/", "http", "http://xn--mnchen-3ya.example/"),
        ("http://m.example/pub%20x/", "http", "http://m.example/pub%20x/"),
        ("  http://m.example/  ".strip(), "http", "http://m.example/"),
    ],
)
def test_base_url_is_normalised(raw: str, scheme: str, expected: str) -> None:
    assert parse_base_url(raw, scheme) == expected


@pytest.mark.parametrize(
    ("raw", "scheme", "reason"),
    [
        ("http://evil@m.example/", "http", "user name"),
        ("http://user:pw@m.example/", "http", "user name"),
        ("http://m.example@evil.example/", "http", "user name"),
        ("javascript:alert(1)", "http", "must start with http://"),
        ("//evil.example/", "http", "must start with http://"),
        ("m.example/pub/", "http", "must start with http://"),
        ("https://m.example/", "http", "must start with http://"),
        ("http://m.example/", "https", "must start with https://"),
        ("ftp://m.example/", "rsync", "must start with rsync://"),
        ("http:///pub/", "http", "a host is required"),
        ("http://m.example/?x=1", "http", "query"),
        ("http://m.example/#frag", "http", "fragment"),
        ("http://m.example/pub/../etc/", "http", "'..'"),
        ("http://m.example/pub/%2e%2e/", "http", "'..'"),
        ("http://m.example//pub/", "http", "'//'"),
        ("http://m.example/a b/", "http", "spaces"),
        ("http://m.example/\x00/", "http", "control"),
        ("http://m.example\\@evil.example/", "http", "backslash"),
        ("http://m.example/<script>/", "http", "percent-encoded"),
        ("http://m.example/it's/", "http", "percent-encoded"),
        ("http://m.example/%zz/", "http", "percent-encoded"),
        ("http://m.example:0/", "http", "port"),
        ("http://m.example:99999/", "http", "port"),
        ("http://m.example:http/", "http", "port"),
        ("http://m.example:/", "http", "port"),
        ("http://[2001:db8::1/", "http", "IPv6"),
        ("http://[not-an-ip]/", "http", "IPv6"),
        ("http://2001:db8::1/", "http", "host name"),
        ("http://m_example.com/", "http", "host name"),
        ("http://-m.example/", "http", "host name"),
        ("http://münchen.example/", "http", "punycode"),
        ("http://0x7f.1/", "http", "IPv4"),
        ("http://1.2.3/", "http", "IPv4"),
        ("http://127.0.0.1/", "http", "loopback"),
        ("http://10.1.2.3/", "http", "private"),
        ("http://169.254.169.254/", "http", "private"),
        ("http://[::1]/", "http", "loopback"),
        ("http://[::ffff:127.0.0.1]/", "http", "loopback"),
        ("http://[2001:db8::1]:8080/", "http", "reserved"),
        ("http://localhost/", "http", "this machine"),
        ("http://a.localhost:8080/", "http", "this machine"),
        ("rsync://m.example/", "rsync", "module"),
        ("http://m.example/" + "a" * 600, "http", "at most 512"),
    ],
)
def test_hostile_or_broken_urls_are_refused(raw: str, scheme: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason) as info:
        parse_base_url(raw, scheme)
    assert reason.lower() in str(info.value).lower()


@pytest.mark.parametrize(
    "raw",
    [
        "http://127.0.0.2:8080/pub/",
        "http://[2001:db8::1]:8080/",
        "http://localhost/",
        "http://10.0.0.1/",
    ],
)
def test_private_hosts_are_allowed_when_configured(raw: str) -> None:
    assert parse_base_url(raw, "http", allow_private=True).startswith("http://")


@pytest.mark.parametrize(
    ("field", "raw", "expected"),
    [
        ("name", "Mirror-1.example_A", "mirror-1.example_a"),
        ("name", "0", "0"),
        ("country", "de", "DE"),
        ("continent", "eu", "EU"),
        ("latitude", "-90", -90.0),
        ("latitude", "48.1", 48.1),
        ("longitude", "180", 180.0),
        ("asn", "AS64500", 64500),
        ("asn", "as1", 1),
        ("asn", "4294967295", 4294967295),
        ("networks", "192.0.2.0/24, 2001:db8::/32 192.0.2.0/24", None),
        ("networks", "10.1.2.3/8", (ipaddress.ip_network("10.0.0.0/8"),)),
        ("capacity", "10000", 10000),
        ("enabled", "no", False),
        ("only_own_asn", "TRUE", True),
        ("excluded_countries", "cn, ru,CN", frozenset({"CN", "RU"})),
        ("scope", "/pub/iso, debian/ pub/iso/", ("pub/iso/", "debian/")),
        ("scope", "/", ()),
        ("contact", "Ops <ops@example.org>", "Ops <ops@example.org>"),
        ("notes", "line 1\r\nline 2\ttab", "line 1\nline 2\ttab"),
        ("https_url", "", None),  # an empty value clears an optional field
        ("networks", " ", ()),
    ],
)
def test_fields_are_normalised(field: str, raw: str, expected: object) -> None:
    values = parse_mirror_fields({field: raw}, partial=True)
    if field == "networks" and expected is None:
        assert values[field] == (
            ipaddress.ip_network("192.0.2.0/24"),
            ipaddress.ip_network("2001:db8::/32"),
        )
    else:
        assert values[field] == expected


@pytest.mark.parametrize(
    ("field", "raw"),
    [
        ("name", "-leading-dash"),
        ("name", "a" * 65),
        ("name", "has space"),
        ("name", "<script>"),
        ("name", "naïve"),
        ("name", ""),
        ("country", "DEU"),
        ("country", "d1"),
        ("country", "ZZ"),
        ("continent", "EUR"),
        ("continent", "XX"),
        ("latitude", "90.5"),
        ("latitude", "nan"),
        ("longitude", "-181"),
        ("longitude", "inf"),
        ("longitude", "east"),
        ("asn", "0"),
        ("asn", "4294967296"),
        ("asn", "-5"),
        ("asn", "AS"),
        ("asn", "١٢"),  # non-ASCII digits
        ("networks", "192.0.2.0/33"),
        ("networks", "example.org"),
        ("capacity", "0"),
        ("capacity", "-10"),
        ("capacity", "1.5"),
        ("capacity", "100000001"),
        ("capacity", ""),
        ("enabled", "maybe"),
        ("enabled", ""),
        ("excluded_countries", "CN, Russia"),
        ("scope", "pub/../etc"),
        ("scope", "pub//iso"),
        ("scope", "./pub"),
        ("scope", "pub\\iso"),
        ("contact", "x" * 257),
        ("contact", "two\nlines"),
        ("contact", "\x1b[31mred"),
        ("notes", "x" * 4001),
        ("notes", "bell\x07"),
        ("colour", "blue"),
    ],
)
def test_bad_fields_are_named(field: str, raw: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_mirror_fields({field: raw}, partial=True)
    assert list(info.value.fields) == [field]


def test_every_bad_field_is_reported_at_once() -> None:
    with pytest.raises(ValidationError) as info:
        parse_mirror_fields(
            {
                "name": "ok",
                "http_url": "http://evil@m.example/",
                "https_url": "javascript:alert(1)",
                "country": "Germany",
                "latitude": "100",
                "capacity": "0",
            }
        )
    assert set(info.value.fields) == {"http_url", "https_url", "country", "latitude", "capacity"}
    assert "http_url: must not contain a user name" in str(info.value)


def test_a_new_mirror_needs_a_name_and_an_http_or_https_url() -> None:
    with pytest.raises(ValidationError) as info:
        build_mirror({"http_url": "http://m.example/"})
    assert info.value.fields == {"name": "required"}
    with pytest.raises(ValidationError) as info:
        build_mirror({"name": "m", "rsync_url": "rsync://m.example/pub/"})
    assert list(info.value.fields) == ["http_url"]


def test_https_only_mirror_is_fine() -> None:
    mirror = build_mirror({"name": "m", "https_url": "https://m.example/"})
    assert mirror.http_url is None
    assert mirror.https_url == "https://m.example/"


def test_defaults_of_a_new_mirror() -> None:
    assert build_mirror({"name": "M", "http_url": "http://m.example"}) == MirrorInput(
        name="m", http_url="http://m.example/"
    )


def test_latitude_and_longitude_come_together() -> None:
    with pytest.raises(ValidationError) as info:
        build_mirror({"name": "m", "http_url": "http://m.example/", "latitude": "10"})
    assert list(info.value.fields) == ["longitude"]


def test_continent_is_filled_from_the_country() -> None:
    mirror = build_mirror({"name": "m", "http_url": "http://m.example/", "country": "jp"})
    assert (mirror.country, mirror.continent) == ("JP", "AS")
    given = build_mirror(
        {"name": "m", "http_url": "http://m.example/", "country": "ru", "continent": "as"}
    )
    assert given.continent == "AS"  # an explicit continent wins


def test_changes_keep_what_they_do_not_name() -> None:
    current = build_mirror(
        {"name": "m", "http_url": "http://m.example/", "https_url": "https://m.example/"}
    )
    changed = apply_changes(current, {"capacity": "50", "https_url": ""})
    assert changed == MirrorInput(name="m", http_url="http://m.example/", capacity=50)


def test_changing_the_country_refreshes_the_continent() -> None:
    current = build_mirror({"name": "m", "http_url": "http://m.example/", "country": "DE"})
    assert apply_changes(current, {"country": "US"}).continent == "NA"
    assert apply_changes(current, {"country": ""}).continent is None
    assert apply_changes(current, {"country": "US", "continent": "EU"}).continent == "EU"


def test_changes_cannot_drop_the_last_url() -> None:
    current = build_mirror({"name": "m", "http_url": "http://m.example/"})
    with pytest.raises(ValidationError) as info:
        apply_changes(current, {"http_url": None})
    assert list(info.value.fields) == ["http_url"]


def test_required_fields_cannot_be_cleared() -> None:
    current = build_mirror({"name": "m", "http_url": "http://m.example/"})
    with pytest.raises(ValidationError) as info:
        apply_changes(current, {"name": "", "capacity": None, "enabled": ""})
    assert info.value.fields == {"name": "required", "capacity": "required", "enabled": "required"}
