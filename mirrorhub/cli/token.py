"""``mirrorhub token add|list|revoke``: API tokens for automation."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TypeVar

from mirrorhub.cli.common import run_with_database
from mirrorhub.settings import Settings

T = TypeVar("T")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "token",
        help="create, list and revoke API tokens",
        description="API tokens authorise writes through the JSON API "
        "(Authorization: Bearer TOKEN). Only a hash of each token is stored.",
    )
    tsub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    add = tsub.add_parser(
        "add",
        help="create a token and print it once",
        description="Create a token. It is printed once: store it, it cannot be shown again.",
    )
    add.add_argument("name", metavar="NAME", help="short unique name: a-z 0-9 . _ -")
    add.add_argument("--json", action="store_true", help="print JSON")
    add.set_defaults(handler=_add)

    ls = tsub.add_parser("list", help="list tokens", description="List every token.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_list)

    rm = tsub.add_parser(
        "revoke", help="revoke a token", description="Revoke a token; it stops working at once."
    )
    rm.add_argument("name", metavar="NAME", help="the token's name")
    rm.set_defaults(handler=_revoke)


_run = run_with_database


def _iso(value: Any) -> str | None:
    return None if value is None else str(value.isoformat())


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import tokens

    info, secret = _run(settings, lambda s: tokens.create_token(s, args.name, created_by="cli"))
    if args.json:
        print(json.dumps({"name": info.name, "token": secret, "prefix": info.prefix}))
    else:
        print(f"created token {info.name}; it is shown only this once:", file=sys.stderr)
        print(secret)
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import tokens

    infos = _run(settings, tokens.list_tokens)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "name": t.name,
                        "prefix": t.prefix,
                        "created_by": t.created_by,
                        "created_at": _iso(t.created_at),
                        "last_used_at": _iso(t.last_used_at),
                        "revoked_at": _iso(t.revoked_at),
                    }
                    for t in infos
                ],
                indent=2,
            )
        )
        return 0
    rows = [("NAME", "PREFIX", "CREATED", "LAST USED", "STATE")]
    for t in infos:
        rows.append(
            (
                t.name,
                t.prefix + "…",
                t.created_at.strftime("%Y-%m-%d %H:%M"),
                t.last_used_at.strftime("%Y-%m-%d %H:%M") if t.last_used_at else "never",
                "active" if t.active else "revoked",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return 0


def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import tokens

    info = _run(settings, lambda s: tokens.revoke_token(s, args.name))
    print(f"revoked token {info.name}")
    return 0
