"""Dashboard users and which mirrors operators may edit; shared by the CLI and the admin pages.

Every change is audited in its own transaction. Passwords are never logged or audited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import audit
from mirrorhub.auth import hash_password
from mirrorhub.db.models import MirrorOperatorRow, MirrorRow, UserRow
from mirrorhub.errors import Conflict, NotFound, ValidationError

Sessions = async_sessionmaker[AsyncSession]
ROLES = ("admin", "operator")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024  # argon2 takes any length; this bounds the work per request
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True, slots=True)
class User:
    id: int
    name: str
    role: str
    created_at: datetime
    last_login_at: datetime | None
    mirrors: tuple[str, ...] = ()  # names of the mirrors an operator may edit


def parse_user_name(value: str) -> str:
    name = value.strip().lower()
    if not _NAME.fullmatch(name):
        raise ValidationError(
            {"name": "1 to 64 characters: a-z, 0-9, '.', '_' or '-', starting with a-z or 0-9"}
        )
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise ValidationError({"password": f"at least {MIN_PASSWORD} characters"})
    if len(password) > MAX_PASSWORD:
        raise ValidationError({"password": f"at most {MAX_PASSWORD} characters"})
    return password


def _role(value: str) -> str:
    if value not in ROLES:
        raise ValidationError({"role": "admin or operator"})
    return value


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


async def _user(session: AsyncSession, name: str) -> UserRow:
    row = await session.scalar(select(UserRow).where(UserRow.name == name.strip().lower()))
    if row is None:
        raise NotFound(f"no user named {name!r}")
    return row


async def _mirror_names(session: AsyncSession, user_id: int) -> tuple[str, ...]:
    names = await session.scalars(
        select(MirrorRow.name)
        .join(MirrorOperatorRow, MirrorOperatorRow.mirror_id == MirrorRow.id)
        .where(MirrorOperatorRow.user_id == user_id)
        .order_by(MirrorRow.name)
    )
    return tuple(names)


def _to_user(row: UserRow, mirrors: tuple[str, ...]) -> User:
    created = _utc(row.created_at)
    assert created is not None
    return User(row.id, row.name, row.role, created, _utc(row.last_login_at), mirrors)


async def add_user(
    sessions: Sessions, name: str, password: str, role: str, *, actor: str = "cli"
) -> User:
    name = parse_user_name(name)
    _role(role)
    check_password(password)
    encoded = hash_password(password)
    now = datetime.now(UTC)
    async with sessions() as session:
        if await session.scalar(select(UserRow.id).where(UserRow.name == name)) is not None:
            raise Conflict(f"a user named {name!r} already exists")
        row = UserRow(name=name, password_hash=encoded, role=role, session_epoch=0, created_at=now)
        session.add(row)
        audit.record(session, actor, "user.add", name, {"role": (None, role)}, at=now)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict(f"a user named {name!r} already exists") from None
        return _to_user(row, ())


async def list_users(sessions: Sessions) -> list[User]:
    async with sessions() as session:
        rows = list(await session.scalars(select(UserRow).order_by(UserRow.name)))
        return [_to_user(r, await _mirror_names(session, r.id)) for r in rows]


async def get_user(sessions: Sessions, name: str) -> User:
    async with sessions() as session:
        row = await _user(session, name)
        return _to_user(row, await _mirror_names(session, row.id))


async def set_password(sessions: Sessions, name: str, password: str, *, actor: str = "cli") -> None:
    """New password; every existing session of the user ends."""
    check_password(password)
    encoded = hash_password(password)
    async with sessions() as session:
        row = await _user(session, name)
        row.password_hash = encoded
        row.session_epoch += 1
        audit.record(session, actor, "user.passwd", row.name)
        await session.commit()


async def remove_user(sessions: Sessions, name: str, *, actor: str = "cli") -> None:
    async with sessions() as session:
        row = await _user(session, name)
        audit.record(session, actor, "user.remove", row.name, {"role": (row.role, None)})
        await session.delete(row)
        await session.commit()


async def count_admins(sessions: Sessions) -> int:
    async with sessions() as session:
        return len(list(await session.scalars(select(UserRow.id).where(UserRow.role == "admin"))))


async def assign(
    sessions: Sessions, user: str, mirror: str, assigned: bool, *, actor: str = "cli"
) -> None:
    """Let ``user`` (an operator) edit ``mirror``, or stop letting them."""
    async with sessions() as session:
        row = await _user(session, user)
        mirror_id = await session.scalar(
            select(MirrorRow.id).where(MirrorRow.name == mirror.strip().lower())
        )
        if mirror_id is None:
            raise NotFound(f"no mirror named {mirror!r}")
        link = await session.get(MirrorOperatorRow, (mirror_id, row.id))
        if assigned and link is None:
            session.add(MirrorOperatorRow(mirror_id=mirror_id, user_id=row.id))
        elif not assigned and link is not None:
            await session.execute(
                delete(MirrorOperatorRow).where(
                    MirrorOperatorRow.mirror_id == mirror_id, MirrorOperatorRow.user_id == row.id
                )
            )
        else:
            return
        action = "operator.assign" if assigned else "operator.unassign"
        audit.record(session, actor, action, mirror.strip().lower(), {"operator": (None, row.name)})
        await session.commit()


async def operators_of(sessions: Sessions, mirror_id: int) -> list[str]:
    async with sessions() as session:
        names = await session.scalars(
            select(UserRow.name)
            .join(MirrorOperatorRow, MirrorOperatorRow.user_id == UserRow.id)
            .where(MirrorOperatorRow.mirror_id == mirror_id)
            .order_by(UserRow.name)
        )
        return list(names)


async def may_edit(sessions: Sessions, user_id: int, role: str, mirror_id: int) -> bool:
    """Admins edit every mirror; operators only those assigned to them."""
    if role == "admin":
        return True
    async with sessions() as session:
        return await session.get(MirrorOperatorRow, (mirror_id, user_id)) is not None


__all__ = [
    "ROLES",
    "User",
    "add_user",
    "assign",
    "check_password",
    "count_admins",
    "get_user",
    "list_users",
    "may_edit",
    "operators_of",
    "parse_user_name",
    "remove_user",
    "set_password",
]
