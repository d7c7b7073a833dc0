"""One benchmark server process: a bare ASGI app or mirrorhub, under identical uvicorn settings.

    python bench/server.py bare PORT [HEADERS_JSON]
    python bench/server.py mirrorhub PORT SETTINGS_JSON

``bare`` answers every request with a fixed 302 (``HEADERS_JSON``: a list of [name, value]
pairs; default: Location and Content-Length only). ``mirrorhub`` runs ``create_app(settings)``.
Both use the uvicorn options of ``mirrorhub serve`` (one process, uvloop, httptools,
lifespan on, no access log, no proxy headers, no server header).
"""

from __future__ import annotations

import ipaddress
import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

import uvicorn

Message = MutableMapping[str, Any]
ASGIApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[Message]],
        Callable[[Message], Awaitable[None]],
    ],
    Awaitable[None],
]
BARE_HEADERS = [
    ["location", "http://mirror001.de.example.net/mirrorhub/pub/x/1.0/x-1.0-x86_64.iso"],
    ["content-length", "0"],
]


def uvicorn_options() -> dict[str, Any]:
    """The settings of ``mirrorhub serve`` (mirrorhub/cli/serve.py), shared by both apps."""
    return {
        "loop": "uvloop",
        "http": "httptools",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "log_level": "warning",
    }


def bare_app(headers: list[list[str]]) -> ASGIApp:
    raw = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    start = {"type": "http.response.start", "status": 302, "headers": raw}
    body = {"type": "http.response.body", "body": b""}

    async def app(
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Message]],
        send: Callable[[Message], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            await send(start)
            await send(body)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    return app


def mirrorhub_app(config: dict[str, Any]) -> ASGIApp:
    from mirrorhub.settings import Settings
    from mirrorhub.web.app import create_app

    settings = Settings(
        database_url=config["database_url"],
        geoip_city_db=Path(config["geoip_city_db"]),
        geoip_asn_db=Path(config["geoip_asn_db"]),
        trusted_proxies=tuple(ipaddress.ip_network(n) for n in config["trusted_proxies"]),
        origin_url=config["origin_url"],
        stats_enabled=config.get("stats_enabled", True),  # bench/stats_overhead.py --wrk
    )
    return create_app(settings)  # type: ignore[return-value]


def main(argv: list[str]) -> int:
    kind, port = argv[0], int(argv[1])
    if kind == "bare":
        app = bare_app(json.loads(argv[2]) if len(argv) > 2 else BARE_HEADERS)
    elif kind == "mirrorhub":
        app = mirrorhub_app(json.loads(argv[2]))
    else:
        raise SystemExit(f"unknown app {kind!r}")
    if os.environ.get("BENCH_GC_DISABLE"):  # experiment: is garbage collection the cost?
        import gc

        gc.disable()
    uvicorn.run(app, host="127.0.0.1", port=port, **uvicorn_options())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
