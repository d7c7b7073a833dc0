"""``mirrorhub mirror add|list|show|edit|enable|disable|remove``."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from mirrorhub.cli.common import run_with_database
from mirrorhub.db.repositories import MirrorRecord, record_json
from mirrorhub.errors import ValidationError
from mirrorhub.settings import Settings

T = TypeVar("T")

# option dest -> service field name; every value is passed on as the string the user typed
_VALUE_OPTIONS: Sequence[tuple[str, str, str, str]] = (
    # (flag, field, metavar, help)
    ("--http", "http_url", "URL", "base URL for http:// downloads (a port is fine)"),
    ("--https", "https_url", "URL", "base URL for https:// downloads"),
    ("--rsync", "rsync_url", "URL", "rsync://host/module/ URL the scanner lists"),
    ("--country", "country", "CC", "ISO 3166-1 alpha-2 country code (e.g. DE)"),
    ("--continent", "continent", "CC", "AF AN AS EU NA OC SA (default: from --country)"),
    ("--lat", "latitude", "DEG", "latitude, -90..90"),
    ("--lon", "longitude", "DEG", "longitude, -180..180"),
    ("--asn", "asn", "N", "autonomous system number (64500 or AS64500)"),
    ("--networks", "networks", "CIDR,...", "networks the mirror is close to or serves"),
    ("--capacity", "capacity", "MBPS", "bandwidth in Mbit/s, the selection weight"),
    ("--scope", "scope", "PREFIX,...", "sub-trees it carries, e.g. pub/iso/ (default: all)"),
    ("--exclude-countries", "excluded_countries", "CC,...", "countries it refuses to serve"),
    ("--contact", "contact", "TEXT", "who runs it (shown to admins only)"),
    ("--notes", "notes", "TEXT", "free-text notes"),
)
_FLAG_OPTIONS: Sequence[tuple[str, str, str]] = (
    ("--only-own-networks", "only_own_networks", "serve only clients in --networks"),
    ("--only-own-asn", "only_own_asn", "serve only clients in its AS"),
    ("--only-own-country", "only_own_country", "serve only clients in its country"),
    ("--only-own-continent", "only_own_continent", "serve only clients on its continent"),
)


_FLAG_OF = {
    **{field: flag for flag, field, _m, _h in _VALUE_OPTIONS},
    **{field: flag for flag, field, _h in _FLAG_OPTIONS},
    "name": "NAME",
}


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "mirror",
        help="register and manage mirrors",
        description="Register, list and change mirrors. Needs `mirrorhub db upgrade` first.",
    )
    msub = parser.add_subparsers(dest="mirror_command", metavar="ACTION", required=True)

    add = msub.add_parser(
        "add",
        help="register a mirror",
        description="Register a mirror. It needs an --http or --https URL (or both).",
    )
    add.add_argument(
        "name", metavar="NAME", help="short unique name: a-z 0-9 . _ - (case-insensitive)"
    )
    _add_field_options(add, editing=False)
    add.add_argument("--disabled", action="store_true", help="register it disabled")
    add.set_defaults(handler=_add)

    ls = msub.add_parser("list", help="list every mirror", description="List every mirror.")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=_list)

    show = msub.add_parser("show", help="show one mirror", description="Show one mirror.")
    show.add_argument("name", metavar="NAME", help="the mirror's name")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)

    edit = msub.add_parser(
        "edit",
        help="change a mirror",
        description="Change only the options given; an empty value clears an optional "
        "field (e.g. --https '').",
    )
    edit.add_argument("name", metavar="NAME", help="the mirror's name")
    edit.add_argument("--rename", metavar="NEW", dest="new_name", help="give it a new name")
    _add_field_options(edit, editing=True)
    edit.set_defaults(handler=_edit)

    for action, enabled in (("enable", True), ("disable", False)):
        p = msub.add_parser(
            action,
            help=f"{action} a mirror",
            description=f"{action.capitalize()} a mirror"
            + ("" if enabled else ": it gets no traffic but keeps being scanned")
            + ".",
        )
        p.add_argument("name", metavar="NAME", help="the mirror's name")
        p.set_defaults(handler=_set_enabled, enabled=enabled)

    rm = msub.add_parser(
        "remove",
        help="delete a mirror",
        description="Delete a mirror with its scan and probe history.",
    )
    rm.add_argument("name", metavar="NAME", help="the mirror's name")
    rm.set_defaults(handler=_remove)


def _add_field_options(parser: argparse.ArgumentParser, *, editing: bool) -> None:
    for flag, field, metavar, help_text in _VALUE_OPTIONS:
        parser.add_argument(flag, dest=field, metavar=metavar, help=help_text)
    for flag, field, help_text in _FLAG_OPTIONS:
        if editing:
            parser.add_argument(
                flag, dest=field, action=argparse.BooleanOptionalAction, help=help_text
            )
        else:
            parser.add_argument(flag, dest=field, action="store_true", help=help_text)


def _fields(args: argparse.Namespace) -> dict[str, str | None]:
    """The options the user gave, as the strings the service validates."""
    out: dict[str, str | None] = {}
    for _flag, field, _metavar, _help in _VALUE_OPTIONS:
        value = getattr(args, field)
        if value is not None:
            out[field] = value
    for _flag, field, _help in _FLAG_OPTIONS:
        value = getattr(args, field)
        if value is not None:
            out[field] = "true" if value else "false"
    return out


def _run(settings: Settings, use: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``use(sessions)`` against the configured database, checked and disposed."""

    try:
        return run_with_database(settings, use)
    except ValidationError as exc:
        # Name the option the user typed, not the field behind it.
        raise ValidationError({_FLAG_OF.get(k, k): v for k, v in exc.fields.items()}) from None


# --- handlers ---


def _add(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import services

    fields = {"name": args.name, **_fields(args)}
    if args.disabled:
        fields["enabled"] = "false"
    record = _run(
        settings,
        lambda s: services.add_mirror(s, fields, allow_private=settings.allow_private_mirrors),
    )
    state = "" if record.mirror.enabled else " (disabled)"
    print(f"added mirror {record.mirror.name}{state}")
    return 0


def _edit(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import services

    changes = _fields(args)
    if args.new_name is not None:
        changes["name"] = args.new_name
    if not changes:
        print("nothing to change: give at least one option (see --help)", file=sys.stderr)
        return 2

    async def use(sessions: Any) -> tuple[MirrorRecord, MirrorRecord]:
        before = await services.get_mirror(sessions, args.name)
        after = await services.edit_mirror(
            sessions, args.name, changes, allow_private=settings.allow_private_mirrors
        )
        return before, after

    before, after = _run(settings, use)
    if after.updated_at == before.updated_at:
        print(f"mirror {after.mirror.name} unchanged")
    else:
        print(f"updated mirror {after.mirror.name}")
    return 0


def _set_enabled(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import services

    record = _run(settings, lambda s: services.set_enabled(s, args.name, args.enabled))
    print(f"mirror {record.mirror.name} {'enabled' if record.mirror.enabled else 'disabled'}")
    return 0


def _remove(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import services

    _run(settings, lambda s: services.remove_mirror(s, args.name))
    print(f"removed mirror {args.name.strip().lower()}")
    return 0


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import services

    records = _run(settings, services.list_mirrors)
    if args.json:
        print(json.dumps([_as_json(r) for r in records], indent=2))
        return 0
    header = ("NAME", "ENABLED", "HEALTH", "COUNTRY", "CAPACITY", "URL")
    rows = [
        (
            r.mirror.name,
            "yes" if r.mirror.enabled else "no",
            r.state.health.value,
            r.mirror.country or "-",
            f"{r.mirror.capacity} Mbit/s",
            r.mirror.https_url or r.mirror.http_url or "-",
        )
        for r in records
    ]
    if sys.stdout.isatty():
        _rich_table(header, rows)
    else:
        _plain_table(header, rows)
    return 0


def _show(args: argparse.Namespace, settings: Settings) -> int:
    from mirrorhub import services

    record = _run(settings, lambda s: services.get_mirror(s, args.name))
    data = _as_json(record)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    width = max(len(k) for k in data)
    for key, value in data.items():
        if isinstance(value, list):
            text = ", ".join(str(v) for v in value) or "-"
        elif isinstance(value, bool):
            text = "yes" if value else "no"
        elif value is None or value == "":
            text = "-"
        else:
            text = str(value)
        print(f"{key.replace('_', ' '):<{width}}  {text}")
    return 0


# --- output ---


def _as_json(record: MirrorRecord) -> dict[str, Any]:
    return {"id": record.mirror.id, **record_json(record, private=True)}


def _plain_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    for row in (header, *rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _rich_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(*header, box=None, header_style="bold")
    for row in rows:
        # Text(), not str: stored values must never be read as rich markup.
        table.add_row(*(Text(cell) for cell in row))
    Console().print(table)
