"""``mirrorhub db upgrade``."""

from __future__ import annotations

import argparse
from typing import Any

from mirrorhub.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("db", help="database schema")
    dbsub = parser.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = dbsub.add_parser("upgrade", help="create or upgrade the schema to the newest version")
    up.set_defaults(handler=_upgrade)


def _upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub.db.migrate import upgrade

    upgrade(settings.database_url)
    print("database is at the newest schema version")
    return 0
