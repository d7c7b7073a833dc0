"""``mirrorhub geoip fetch``: install this month's DB-IP Lite city and ASN databases."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mirrorhub.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("geoip", help="GeoIP databases")
    geosub = parser.add_subparsers(dest="geoip_command", metavar="ACTION", required=True)
    fetch = geosub.add_parser(
        "fetch",
        help="download and install the free DB-IP Lite city and ASN databases",
        description=(
            "Download this month's databases (last month's when this month's is not out yet), "
            "verify them and replace the installed ones atomically. A running server picks "
            "them up without a restart."
        ),
    )
    fetch.add_argument(
        "--city-url", metavar="URL", help="city database URL ({year} and {month} are filled in)"
    )
    fetch.add_argument(
        "--asn-url", metavar="URL", help="ASN database URL ({year} and {month} are filled in)"
    )
    fetch.add_argument(
        "--dest",
        metavar="DIR",
        type=Path,
        help="install into DIR instead of the configured files or geoip_dir",
    )
    fetch.set_defaults(handler=_fetch)


def _fetch(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub.geoip_fetch import fetch_databases  # httpx only when needed

    for item in fetch_databases(
        settings, city_url=args.city_url, asn_url=args.asn_url, dest=args.dest
    ):
        built = datetime.fromtimestamp(item.build_epoch, UTC).strftime("%Y-%m-%d")
        print(
            f"installed {item.kind} database {item.path} "
            f"({item.database_type}, built {built}, {item.size / 2**20:.1f} MiB) from {item.url}"
        )
    return 0
