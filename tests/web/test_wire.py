"""Header lines are refused exactly where uvicorn would refuse a value."""

from __future__ import annotations

from uvicorn.protocols.http.httptools_impl import HEADER_VALUE_RE

from mirrorhub.web.wire import header_lines, lines

GOOD = [(b"location", b"http://m.example/x.iso"), (b"link", b"<http://a/x>; rel=duplicate")]


def test_every_byte_is_refused_exactly_where_uvicorn_refuses_it() -> None:
    for byte in range(256):
        value = b"v" + bytes([byte]) + b"v"
        for at in range(len(GOOD) + 1):  # the byte in the first, middle or last value
            headers = [*GOOD[:at], (b"x-test", value), *GOOD[at:]]
            refused = header_lines(headers) is None
            assert refused == bool(HEADER_VALUE_RE.search(value)), (byte, at)


def test_accepted_lines_are_the_plain_lines() -> None:
    headers = [*GOOD, (b"x-tab", b"a\tb"), (b"x-high", "ü".encode())]
    assert header_lines(headers) == lines(headers)
    assert lines(GOOD) == (
        b"location: http://m.example/x.iso\r\nlink: <http://a/x>; rel=duplicate\r\n"
    )
