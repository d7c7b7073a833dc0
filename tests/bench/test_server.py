"""bench/server.py's ``bare-direct`` is answered by mirrorhub's direct protocol path, the
floor it is meant to measure (without ``direct_paths`` the protocol handed it every request
through ASGI, and nothing noticed for a session)."""

from __future__ import annotations

import asyncio
from typing import Any

import uvicorn
from uvicorn.server import ServerState

from bench.server import BARE_HEADERS, bare_app
from mirrorhub.web.protocol import RedirectProtocol


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        extra = {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}
        return extra.get(name, default)

    def write(self, data: Any) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_bare_direct_is_answered_from_the_parser() -> None:
    app = bare_app(BARE_HEADERS, direct=True)
    config = uvicorn.Config(
        app, http=RedirectProtocol, lifespan="off", access_log=False, proxy_headers=False
    )
    config.load()
    loop = asyncio.new_event_loop()
    try:
        proto = RedirectProtocol(  # type: ignore[no-untyped-call]
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        transport = _Transport()
        proto.connection_made(transport)
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
