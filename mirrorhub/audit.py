"""The audit log: who changed what, when, before -> after.

Writers call :func:`record` inside the transaction that makes the change, so an entry exists
exactly when the change was committed. Actors are ``user:NAME``, ``token:NAME`` or ``cli``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import AuditRow
from mirrorhub.validation import MirrorInput

Changes = Mapping[str, tuple[Any, Any]]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    at: datetime
    actor: str
    action: str
    target: str
    changes: dict[str, tuple[Any, Any]]


def _plain(value: Any) -> Any:
    """JSON-friendly form of a mirror field (networks, sets and tuples become lists)."""
    if isinstance(value, frozenset):
        return sorted(value)
    if isinstance(value, tuple):
        return [str(v) for v in value]
    return value


def mirror_changes(before: MirrorInput | None, after: MirrorInput | None) -> dict[str, Any]:
    """``{field: (before, after)}`` for the fields that differ; None stands for "no mirror"."""
    fields = [f.name for f in dataclasses.fields(MirrorInput)]
    old = {f: _plain(getattr(before, f)) for f in fields} if before is not None else {}
    new = {f: _plain(getattr(after, f)) for f in fields} if after is not None else {}
    out: dict[str, Any] = {}
    for name in fields:
        a, b = old.get(name), new.get(name)
        if a != b and not (before is None and b in (None, "", [])):
            out[name] = (a, b)
    return out


def record(
    session: AsyncSession,
    actor: str,
    action: str,
    target: str,
    changes: Changes | None = None,
    *,
    at: datetime | None = None,
) -> None:
    """Add an entry to the caller's transaction (it is written when the caller commits)."""
    session.add(
        AuditRow(
            at=at or datetime.now(UTC),
            actor=actor[:128],
            action=action[:64],
            target=target[:256],
            changes=json.dumps({k: list(v) for k, v in (changes or {}).items()}, default=str),
        )
    )


async def write(
    sessions: async_sessionmaker[AsyncSession],
    actor: str,
    action: str,
    target: str,
    changes: Changes | None = None,
) -> None:
    """An entry in a transaction of its own (for actions that change nothing else)."""
    async with sessions() as session:
        record(session, actor, action, target, changes)
        await session.commit()


def _entry(row: AuditRow) -> AuditEntry:
    try:
        raw = json.loads(row.changes or "{}")
    except ValueError:
        raw = {}
    changes = {str(k): (v[0], v[1]) for k, v in raw.items() if isinstance(v, list) and len(v) == 2}
    at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)
    return AuditEntry(row.id, at, row.actor, row.action, row.target, changes)


async def entries(
    sessions: async_sessionmaker[AsyncSession],
    *,
    limit: int = 50,
    offset: int = 0,
    actor: str | None = None,
    target: str | None = None,
) -> tuple[list[AuditEntry], int]:
    """Newest first, with the total count for paging."""
    query = select(AuditRow)
    count = select(func.count()).select_from(AuditRow)
    if actor:
        query = query.where(AuditRow.actor == actor)
        count = count.where(AuditRow.actor == actor)
    if target:
        query = query.where(AuditRow.target == target)
        count = count.where(AuditRow.target == target)
    async with sessions() as session:
        rows = await session.scalars(
            query.order_by(AuditRow.at.desc(), AuditRow.id.desc()).limit(limit).offset(offset)
        )
        total = int(await session.scalar(count) or 0)
        return [_entry(r) for r in rows], total


__all__ = ["AuditEntry", "entries", "mirror_changes", "record", "write"]
