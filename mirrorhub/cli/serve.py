"""``mirrorhub serve``: the dispatcher under uvicorn."""

from __future__ import annotations

import argparse
from typing import Any

from mirrorhub.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("serve", help="run the dispatcher (and, by default, the workers)")
    parser.add_argument("--host", help="address to listen on (default: MIRRORHUB_HOST)")
    parser.add_argument("--port", type=int, help="port to listen on (default: MIRRORHUB_PORT)")
    parser.add_argument("--no-upgrade", action="store_true", help="do not migrate the database")
    parser.add_argument(
        "--no-workers",
        action="store_true",
        help="do not run scans and probes in-process (run `mirrorhub worker` elsewhere)",
    )
    parser.set_defaults(handler=_serve)


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    import uvicorn

    from mirrorhub.db.migrate import upgrade
    from mirrorhub.web.app import create_app

    if not args.no_upgrade:
        upgrade(settings.database_url)
    app = create_app(settings, workers=not args.no_workers)
    uvicorn.run(
        app, host=args.host or settings.host, port=args.port or settings.port, **uvicorn_options()
    )
    return 0


def uvicorn_options() -> dict[str, Any]:
    """How ``mirrorhub serve`` runs uvicorn (bench/server.py serves its apps the same way)."""
    from mirrorhub.web.protocol import RedirectProtocol

    return {
        "loop": "uvloop",
        "http": RedirectProtocol,  # uvicorn's httptools protocol + direct plain redirects
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,  # mirrorhub applies its own trusted-proxy rules
        "server_header": False,
    }
