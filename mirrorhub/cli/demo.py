"""``mirrorhub demo``: a sample origin, three local mirrors and the dispatcher, in one command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from mirrorhub.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "demo",
        help="run a self-contained demo: sample origin, three local mirrors, geo redirects",
        description="Create a sample origin tree and three mirror copies in DIR, serve the "
        "mirrors on 127.0.0.2-4, write a small GeoIP database, register and scan everything "
        "in a SQLite database in DIR, print curl lines to try, and run the dispatcher until "
        "Ctrl-C. DIR is rebuilt on every run. MIRRORHUB_* settings do not apply.",
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path("demo-data"),
        help="directory for the demo's data (default: ./demo-data)",
    )
    parser.add_argument(
        "--host", default="127.0.0.1", help="dispatcher address (default: 127.0.0.1)"
    )
    parser.add_argument("--port", type=int, default=8080, help="dispatcher port (default: 8080)")
    parser.set_defaults(handler=_demo)


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub.demo.run import run_demo

    del settings  # the demo builds its own, so its printed examples hold everywhere
    return run_demo(args.dir, args.host, args.port)
