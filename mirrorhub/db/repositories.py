"""Session in, domain objects out. Nothing here commits: the caller owns the transaction."""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import delete, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from mirrorhub.domain import Health, IPNetwork, Mirror, MirrorState, Restrictions
from mirrorhub.validation import MirrorInput
from mirrorhub.workers.health import decode_scheme_health, down_schemes

from . import changelog
from .models import (
    IndexVersionRow,
    MirrorRow,
    MirrorStateRow,
)

# Rows per query when paging through files and diffs (1,000,000 files in 50 pages).
PAGE = 20_000


@dataclass(frozen=True, slots=True)
class MirrorRecord:
    """A mirror with everything the admin, the CLI and the status page show about it."""

    mirror: Mirror
    state: MirrorState
    contact: str
    notes: str
    created_at: datetime
    updated_at: datetime
    lag_seconds: float | None = None
    last_scan_error: str = ""


# --- conversions ---


def _networks(text: str) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(item) for item in text.split())


def _utc(value: datetime) -> datetime:
    # SQLite hands timezone-aware columns back naive; they were written in UTC.
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def row_to_mirror(row: MirrorRow) -> Mirror:
    return Mirror(
        id=row.id,
        name=row.name,
        http_url=row.http_url,
        https_url=row.https_url,
        rsync_url=row.rsync_url,
        country=row.country,
        continent=row.continent,
        latitude=row.latitude,
        longitude=row.longitude,
        asn=row.asn,
        networks=_networks(row.networks),
        capacity=row.capacity,
        enabled=row.enabled,
        restrictions=Restrictions(
            only_own_networks=row.only_own_networks,
            only_own_asn=row.only_own_asn,
            only_own_country=row.only_own_country,
            only_own_continent=row.only_own_continent,
            excluded_countries=frozenset(row.excluded_countries.split()),
        ),
        scope=tuple(row.scope.split()),
    )


def row_to_input(row: MirrorRow) -> MirrorInput:
    """The editable fields of a stored mirror, for applying a partial edit."""
    mirror = row_to_mirror(row)
    r = mirror.restrictions
    return MirrorInput(
        name=mirror.name,
        http_url=mirror.http_url,
        https_url=mirror.https_url,
        rsync_url=mirror.rsync_url,
        country=mirror.country,
        continent=mirror.continent,
        latitude=mirror.latitude,
        longitude=mirror.longitude,
        asn=mirror.asn,
        networks=mirror.networks,
        capacity=mirror.capacity,
        enabled=mirror.enabled,
        only_own_networks=r.only_own_networks,
        only_own_asn=r.only_own_asn,
        only_own_country=r.only_own_country,
        only_own_continent=r.only_own_continent,
        excluded_countries=r.excluded_countries,
        scope=mirror.scope,
        contact=row.contact,
        notes=row.notes,
    )


def input_to_columns(data: MirrorInput) -> dict[str, Any]:
    """Column values for a validated mirror; lists become space-separated strings."""
    return {
        "name": data.name,
        "http_url": data.http_url,
        "https_url": data.https_url,
        "rsync_url": data.rsync_url,
        "country": data.country,
        "continent": data.continent,
        "latitude": data.latitude,
        "longitude": data.longitude,
        "asn": data.asn,
        "networks": " ".join(str(n) for n in data.networks),
        "capacity": data.capacity,
        "enabled": data.enabled,
        "only_own_networks": data.only_own_networks,
        "only_own_asn": data.only_own_asn,
        "only_own_country": data.only_own_country,
        "only_own_continent": data.only_own_continent,
        "excluded_countries": " ".join(sorted(data.excluded_countries)),
        "scope": " ".join(data.scope),
        "contact": data.contact,
        "notes": data.notes,
    }


def row_to_state(row: MirrorStateRow | None) -> MirrorState:
    if row is None:
        return MirrorState()
    try:
        health = Health(row.health)
    except ValueError:
        health = Health.UNKNOWN  # a value from a newer version: trust until probed again
    return MirrorState(
        health=health,
        lagging=row.lagging,
        scan_failed=row.scan_failed,
        last_good_scan=row.last_good_scan,
        down_schemes=down_schemes(decode_scheme_health(row.scheme_health)),
    )


def _record(row: MirrorRow, state: MirrorStateRow | None) -> MirrorRecord:
    return MirrorRecord(
        mirror=row_to_mirror(row),
        state=row_to_state(state),
        contact=row.contact,
        notes=row.notes,
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        lag_seconds=state.lag_seconds if state is not None else None,
        last_scan_error=state.last_scan_error if state is not None else "",
    )


# --- the index version ---


async def current_version(session: AsyncSession) -> int:
    version = await session.scalar(select(IndexVersionRow.version).where(IndexVersionRow.id == 1))
    return int(version or 0)


async def bump_version(session: AsyncSession, *, files: Collection[int] | None) -> int:
    """Tell every dispatcher that its index changed (they see it once the caller commits);
    the new version.

    ``files``: the ids of the origin files whose facts changed (the file itself, a mirror's
    difference or a re-check of it, including files deleted); ``()`` when only mirrors
    changed; None when anything may have (dispatchers rebuild in full).
    """
    version: int = (
        await session.execute(
            update(IndexVersionRow)
            .where(IndexVersionRow.id == 1)
            .values(version=IndexVersionRow.version + 1)
            .returning(IndexVersionRow.version)
        )
    ).scalar_one()
    await changelog.record(session, version, files)
    if session.get_bind().dialect.name == "postgresql":
        # Delivered at commit (and dropped on rollback): wakes the dispatchers' listeners
        # (mirrorhub/notify.py) at once instead of at their next periodic check.
        await session.execute(text("SELECT pg_notify('mirrorhub_index', '')"))
    return version


# --- mirrors ---


async def get_mirror_row(session: AsyncSession, name: str) -> MirrorRow | None:
    row: MirrorRow | None = await session.scalar(select(MirrorRow).where(MirrorRow.name == name))
    return row


async def get_mirror(session: AsyncSession, name: str) -> MirrorRecord | None:
    result = await session.execute(
        select(MirrorRow, MirrorStateRow)
        .outerjoin(MirrorStateRow, MirrorStateRow.mirror_id == MirrorRow.id)
        .where(MirrorRow.name == name)
    )
    found = result.first()
    return _record(*found) if found is not None else None


async def list_mirrors(session: AsyncSession) -> list[MirrorRecord]:
    result = await session.execute(
        select(MirrorRow, MirrorStateRow)
        .outerjoin(MirrorStateRow, MirrorStateRow.mirror_id == MirrorRow.id)
        .order_by(MirrorRow.name)
    )
    return [_record(m, s) for m, s in result]


async def insert_mirror(session: AsyncSession, data: MirrorInput, now: datetime) -> MirrorRecord:
    """Insert a mirror; a duplicate name raises IntegrityError at flush."""
    row = MirrorRow(**input_to_columns(data), created_at=now, updated_at=now)
    session.add(row)
    await session.flush()
    return _record(row, None)


async def update_mirror(
    session: AsyncSession, row: MirrorRow, data: MirrorInput, now: datetime
) -> MirrorRecord:
    """Overwrite a loaded mirror's fields with ``data``."""
    for column, value in input_to_columns(data).items():
        setattr(row, column, value)
    row.updated_at = now
    await session.flush()
    state = await session.get(MirrorStateRow, row.id)
    return _record(row, state)


async def delete_mirror(session: AsyncSession, name: str) -> bool:
    """Delete a mirror with its state and diffs; False when there was none."""
    # Scans, probes, state, diffs and confirmations go with it through ON DELETE CASCADE
    # (db.session turns foreign keys on for every SQLite connection).
    result = await session.execute(delete(MirrorRow).where(MirrorRow.name == name))
    return bool(getattr(result, "rowcount", 0))


async def ensure_mirror_state(session: AsyncSession, mirror_ids: Sequence[int]) -> None:
    """Create missing ``mirror_state`` rows without racing another writer creating them."""
    if not mirror_ids:
        return
    dialect = session.get_bind().dialect.name
    insert_fn: Any = postgresql_insert if dialect == "postgresql" else sqlite_insert
    await session.execute(
        insert_fn(MirrorStateRow)
        .values([{"mirror_id": mirror_id} for mirror_id in sorted(set(mirror_ids))])
        .on_conflict_do_nothing(index_elements=["mirror_id"])
    )


def record_json(record: MirrorRecord, *, private: bool) -> dict[str, Any]:
    """A mirror as the API and `mirror list --json` show it; contact and notes only when
    ``private`` (a token holder, the CLI)."""
    m, st, r = record.mirror, record.state, record.mirror.restrictions
    out: dict[str, Any] = {
        "name": m.name,
        "enabled": m.enabled,
        "http_url": m.http_url,
        "https_url": m.https_url,
        "rsync_url": m.rsync_url,
        "country": m.country,
        "continent": m.continent,
        "latitude": m.latitude,
        "longitude": m.longitude,
        "asn": m.asn,
        "networks": [str(n) for n in m.networks],
        "capacity": m.capacity,
        "scope": list(m.scope),
        "only_own_networks": r.only_own_networks,
        "only_own_asn": r.only_own_asn,
        "only_own_country": r.only_own_country,
        "only_own_continent": r.only_own_continent,
        "excluded_countries": sorted(r.excluded_countries),
        "health": st.health.value,
        "lagging": st.lagging,
        "lag_seconds": record.lag_seconds,
        "scan_failed": st.scan_failed,
        "last_good_scan": st.last_good_scan,
        "last_scan_error": record.last_scan_error,
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
    }
    if private:
        out["contact"] = record.contact
        out["notes"] = record.notes
    return out
