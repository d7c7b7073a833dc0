"""Use cases shared by the CLI, the admin pages and the API.

Each function takes an ``async_sessionmaker`` and plain input (the strings a form, an option
or a JSON body gives), validates through :mod:`mirrorhub.validation`, runs in one transaction,
commits, and bumps the index version whenever the dispatchers must see the change.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import inspect, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mirrorhub import audit
from mirrorhub.db import repositories as repo
from mirrorhub.db.models import MirrorRow
from mirrorhub.db.repositories import MirrorRecord
from mirrorhub.errors import Conflict, MirrorhubError, NotFound
from mirrorhub.validation import MirrorInput, apply_changes, build_mirror, parse_name

Clock = Callable[[], datetime]
Sessions = async_sessionmaker[AsyncSession]


class DatabaseNotReady(MirrorhubError):
    """The database cannot be reached or its schema is missing or out of date."""


def utcnow() -> datetime:
    return datetime.now(UTC)


def _key(name: str) -> str:
    """Names are stored in lower case; look them up the same way (garbage finds nothing)."""
    try:
        return parse_name(name.strip())
    except ValueError:
        return name


async def _existing_row(session: AsyncSession, name: str) -> MirrorRow:
    row = await repo.get_mirror_row(session, _key(name))
    if row is None:
        raise NotFound(f"no mirror named {name!r}")
    return row


async def add_mirror(
    sessions: Sessions,
    fields: Mapping[str, str | None],
    *,
    allow_private: bool = False,
    now: Clock = utcnow,
    actor: str = "cli",
) -> MirrorRecord:
    """Register a mirror; ``fields`` uses the names of :class:`~validation.MirrorInput`.

    Every change here is written to the audit log as ``actor`` in the same transaction.
    """
    data = build_mirror(fields, allow_private=allow_private)
    async with sessions() as session:
        if await repo.get_mirror_row(session, data.name) is not None:
            raise Conflict(f"a mirror named {data.name!r} already exists")
        try:
            at = now()
            record = await repo.insert_mirror(session, data, at)
            audit.record(
                session, actor, "mirror.add", data.name, audit.mirror_changes(None, data), at=at
            )
            await repo.bump_version(session, files=())
            await session.commit()
        except IntegrityError:
            # Lost a race with another writer adding the same name.
            raise Conflict(f"a mirror named {data.name!r} already exists") from None
    return record


async def edit_mirror(
    sessions: Sessions,
    name: str,
    changes: Mapping[str, str | None],
    *,
    allow_private: bool = False,
    now: Clock = utcnow,
    actor: str = "cli",
) -> MirrorRecord:
    """Change the given fields only (``None`` or ``""`` clears an optional one).

    A ``name`` key renames the mirror. Nothing is written when nothing changes.
    """
    async with sessions() as session:
        row = await _existing_row(session, name)
        current = repo.row_to_input(row)
        data = apply_changes(current, changes, allow_private=allow_private)
        if data == current:
            record = await repo.get_mirror(session, row.name)
            assert record is not None
            return record
        if data.name != current.name and await repo.get_mirror_row(session, data.name):
            raise Conflict(f"a mirror named {data.name!r} already exists")
        try:
            at = now()
            record = await repo.update_mirror(session, row, data, at)
            audit.record(
                session,
                actor,
                _edit_action(current, data),
                current.name,
                audit.mirror_changes(current, data),
                at=at,
            )
            await repo.bump_version(session, files=())
            await session.commit()
        except IntegrityError:
            raise Conflict(f"a mirror named {data.name!r} already exists") from None
    return record


def _edit_action(before: MirrorInput, after: MirrorInput) -> str:
    """``mirror.enable`` / ``mirror.disable`` when that is all that changed, else ``mirror.edit``."""
    if (
        before.enabled != after.enabled
        and dataclasses.replace(before, enabled=after.enabled) == after
    ):
        return "mirror.enable" if after.enabled else "mirror.disable"
    return "mirror.edit"


async def set_enabled(
    sessions: Sessions, name: str, enabled: bool, *, now: Clock = utcnow, actor: str = "cli"
) -> MirrorRecord:
    return await edit_mirror(
        sessions, name, {"enabled": "true" if enabled else "false"}, now=now, actor=actor
    )


async def remove_mirror(sessions: Sessions, name: str, *, actor: str = "cli") -> None:
    """Delete a mirror with everything the workers learnt about it."""
    async with sessions() as session:
        row = await _existing_row(session, name)
        before = repo.row_to_input(row)
        if not await repo.delete_mirror(session, row.name):
            raise NotFound(f"no mirror named {name!r}")
        audit.record(session, actor, "mirror.remove", row.name, audit.mirror_changes(before, None))
        await repo.bump_version(session, files=())
        await session.commit()


async def list_mirrors(sessions: Sessions) -> list[MirrorRecord]:
    """Every mirror, enabled or not, by name."""
    async with sessions() as session:
        return await repo.list_mirrors(session)


async def get_mirror(sessions: Sessions, name: str) -> MirrorRecord:
    async with sessions() as session:
        record = await repo.get_mirror(session, _key(name))
    if record is None:
        raise NotFound(f"no mirror named {name!r}")
    return record


def _missing_sqlite_file(engine: AsyncEngine) -> str | None:
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return None if Path(database).exists() else database


async def check_database(engine: AsyncEngine) -> None:
    """Raise DatabaseNotReady, in one line, unless the schema is at the newest revision.

    Commands other than ``mirrorhub db upgrade`` call this first, so that a fresh install
    says what to do instead of printing a "no such table" traceback.
    """
    from alembic.script import ScriptDirectory

    from mirrorhub.db.migrate import alembic_config

    heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
    missing = _missing_sqlite_file(engine)
    if missing is not None:
        # Connecting would create an empty file and hide the mistake.
        raise DatabaseNotReady(
            f"database not initialised ({missing} does not exist): run `mirrorhub db upgrade`"
        )
    try:
        async with engine.connect() as conn:
            has_table = await conn.run_sync(lambda sync: inspect(sync).has_table("alembic_version"))
            revisions = (
                set((await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars())
                if has_table
                else set()
            )
    except (OSError, DBAPIError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise DatabaseNotReady(f"cannot open the database: {reason}") from None
    if not revisions:
        raise DatabaseNotReady("database not initialised: run `mirrorhub db upgrade`")
    if revisions != heads:
        raise DatabaseNotReady(
            f"database schema is at {', '.join(sorted(revisions))}, this mirrorhub needs "
            f"{', '.join(sorted(heads))}: run `mirrorhub db upgrade`"
        )


__all__ = [
    "Clock",
    "DatabaseNotReady",
    "MirrorRecord",
    "add_mirror",
    "check_database",
    "edit_mirror",
    "get_mirror",
    "list_mirrors",
    "remove_mirror",
    "set_enabled",
    "utcnow",
]
