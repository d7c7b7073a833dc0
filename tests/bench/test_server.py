"""bench/server.py's ``bare-direct`` is answered by mirrorhub's direct protocol path, the
floor it is meant to measure (without ``direct_paths`` the protocol handed it every request
through ASGI, and nothing noticed for a session)."""

from __future__ import annotations

import asyncio

from bench.server import BARE_HEADERS, bare_app
from tests.web.test_protocol import connect


def test_bare_direct_is_answered_from_the_parser() -> None:
    loop = asyncio.new_event_loop()
    try:
        proto, transport = connect(bare_app(BARE_HEADERS, direct=True), loop)
        assert proto._fast is not None  # the protocol will answer this app directly
        for target in (b"/pub/x", b"/any/other.iso?q=1"):
            proto.data_received(b"GET " + target + b" HTTP/1.1\r\nhost: b\r\n\r\n")
        loop.run_until_complete(asyncio.sleep(0))  # the pass ends: its answers are written
        proto.connection_lost(None)
    finally:
        loop.close()
    assert len(transport.written) == 2
    for answer in transport.written:
        assert answer.startswith(b"HTTP/1.1 302 Found\r\n")
        assert f"location: {BARE_HEADERS[0][1]}\r\n".encode() in answer
