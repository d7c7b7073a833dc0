"""``mirrorhub user add|list|passwd|remove|assign|unassign``: dashboard accounts."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any, TypeVar

from mirrorhub.cli.common import run_with_database
from mirrorhub.errors import MirrorhubError
from mirrorhub.settings import Settings

T = TypeVar("T")


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "user",
        help="manage dashboard users",
        description="Create and manage the people who sign in to /-/admin/.",
    )
    usub = parser.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = usub.add_parser(
        "add",
        help="create a user",
        description="Create a user. The password is asked for twice, or read from the first "
        "line of standard input with --password-stdin.",
    )
    add.add_argument("name", metavar="NAME", help="a-z 0-9 . _ - (case-insensitive)")
    add.add_argument(
        "--role", choices=("admin", "operator"), required=True, help="admin: everything; "
        "operator: sees everything, edits the mirrors assigned to them",
    )  # fmt: skip
    _password_option(add)
    add.set_defaults(handler=_add)

    ls = usub.add_parser("list", help="list users", description="List users and their mirrors.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_list)

    pw = usub.add_parser(
        "passwd",
        help="set a user's password",
        description="Set a new password; the user's open sessions end.",
    )
    pw.add_argument("name", metavar="NAME")
    _password_option(pw)
    pw.set_defaults(handler=_passwd)

    rm = usub.add_parser("remove", help="delete a user", description="Delete a user.")
    rm.add_argument("name", metavar="NAME")
    rm.set_defaults(handler=_remove)

    for action, assigned in (("assign", True), ("unassign", False)):
        p = usub.add_parser(
            action,
            help=f"{action} a mirror to an operator" if assigned else "take a mirror away",
            description="Let an operator edit a mirror."
            if assigned
            else "Stop letting an operator edit a mirror.",
        )
        p.add_argument("name", metavar="NAME", help="the user")
        p.add_argument("mirror", metavar="MIRROR", help="the mirror")
        p.set_defaults(handler=_assign, assigned=assigned)


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input (for scripts)",
    )


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password (again): ") != first:
        raise MirrorhubError("the passwords do not match")
    return first


_run = run_with_database


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import users

    users.parse_user_name(args.name)  # fail before asking for a password
    password = users.check_password(_read_password(args))
    user = _run(settings, lambda s: users.add_user(s, args.name, password, args.role))
    print(f"added {user.role} {user.name}")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import users

    found = _run(settings, users.list_users)
    if args.json:
        rows = [
            {
                "name": u.name,
                "role": u.role,
                "created_at": u.created_at.isoformat(),
                "last_login_at": u.last_login_at.isoformat() if u.last_login_at else None,
                "mirrors": list(u.mirrors),
            }
            for u in found
        ]
        print(json.dumps(rows, indent=2))
        return 0
    if not found:
        print("no users: create one with `mirrorhub user add NAME --role admin`")
    for u in found:
        last = u.last_login_at.strftime("%Y-%m-%d %H:%M UTC") if u.last_login_at else "never"
        mirrors = f"  mirrors: {', '.join(u.mirrors)}" if u.mirrors else ""
        print(f"{u.name:<24} {u.role:<9} last sign-in {last}{mirrors}")
    return 0


def _passwd(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import users

    password = users.check_password(_read_password(args))
    _run(settings, lambda s: users.set_password(s, args.name, password))
    print(f"password of {args.name.lower()} changed; their sessions have ended")
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import users

    _run(settings, lambda s: users.remove_user(s, args.name))
    print(f"removed user {args.name.lower()}")
    return 0


def _assign(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import users

    _run(settings, lambda s: users.assign(s, args.name, args.mirror, args.assigned))
    verb = "may now edit" if args.assigned else "may no longer edit"
    print(f"{args.name.lower()} {verb} {args.mirror.lower()}")
    return 0
