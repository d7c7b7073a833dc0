"""Repositories on SQLite and PostgreSQL: conversions, the index source, the version counter."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db import index_load
from mirrorhub.db import repositories as repo
from mirrorhub.db.models import (
    MirrorFileConfirmationRow,
    MirrorFileDiffRow,
    MirrorStateRow,
    OriginFileRow,
)
from mirrorhub.domain import Health, Mirror, MirrorState, Restrictions
from mirrorhub.validation import MirrorInput, build_mirror

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

FULL = build_mirror(
    {
        "name": "full",
        "http_url": "http://full.example:8080/pub/",
        "https_url": "https://full.example/pub/",
        "rsync_url": "rsync://full.example/pub/",
        "country": "DE",
        "continent": "EU",
        "latitude": "50.1",
        "longitude": "8.7",
        "asn": "64500",
        "networks": "192.0.2.0/24 2001:db8::/32",
        "capacity": "2500",
        "enabled": "false",
        "only_own_networks": "true",
        "only_own_asn": "true",
        "only_own_country": "true",
        "only_own_continent": "true",
        "excluded_countries": "RU CN",
        "scope": "pub/iso/ debian/",
        "contact": "ops@full.example",
        "notes": "two\nlines",
    }
)


async def test_a_mirror_survives_the_round_trip(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        inserted = await repo.insert_mirror(session, FULL, NOW)
        await session.commit()
    async with sessions() as session:
        record = await repo.get_mirror(session, "full")
        row = await repo.get_mirror_row(session, "full")
    assert record is not None and row is not None
    assert record == inserted
    assert record.mirror == Mirror(
        id=record.mirror.id,
        name="full",
        http_url="http://full.example:8080/pub/",
        https_url="https://full.example/pub/",
        rsync_url="rsync://full.example/pub/",
        country="DE",
        continent="EU",
        latitude=50.1,
        longitude=8.7,
        asn=64500,
        networks=(ipaddress.ip_network("192.0.2.0/24"), ipaddress.ip_network("2001:db8::/32")),
        capacity=2500,
        enabled=False,
        restrictions=Restrictions(True, True, True, True, frozenset({"CN", "RU"})),
        scope=("pub/iso/", "debian/"),
    )
    assert (record.contact, record.notes) == ("ops@full.example", "two\nlines")
    assert record.created_at == record.updated_at == NOW
    assert record.state == MirrorState()
    assert repo.row_to_input(row) == FULL
    assert row.excluded_countries == "CN RU"  # stored sorted, space-separated


async def test_list_and_delete(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        for name in ("b", "a", "c"):
            await repo.insert_mirror(
                session, MirrorInput(name=name, http_url=f"http://{name}.example/"), NOW
            )
        await session.commit()
    async with sessions() as session:
        assert [r.mirror.name for r in await repo.list_mirrors(session)] == ["a", "b", "c"]
        assert await repo.delete_mirror(session, "b") is True
        assert await repo.delete_mirror(session, "b") is False
        await session.commit()
    async with sessions() as session:
        assert [r.mirror.name for r in await repo.list_mirrors(session)] == ["a", "c"]
        assert await repo.get_mirror(session, "b") is None


async def test_version_counter(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        assert await repo.current_version(session) == 0
        await repo.bump_version(session, files=None)
        await repo.bump_version(session, files=None)
        assert await repo.current_version(session) == 2
        await session.rollback()
    async with sessions() as session:
        assert await repo.current_version(session) == 0  # repositories never commit
        await repo.bump_version(session, files=None)
        await session.commit()
    async with sessions() as session:
        assert await repo.current_version(session) == 1


async def test_empty_index_source(sessions: async_sessionmaker[AsyncSession]) -> None:
    async with sessions() as session:
        source = await index_load.load_index_source(session)
    assert (source.version, list(source.mirrors), list(source.files), list(source.diffs)) == (
        0,
        [],
        [],
        [],
    )


async def test_index_source_holds_every_mirror_file_and_diff(
    sessions: async_sessionmaker[AsyncSession], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repo, "PAGE", 1000)  # files in three pages, diffs in two
    async with sessions() as session:
        up = await repo.insert_mirror(
            session, MirrorInput(name="up", http_url="http://up.example/"), NOW
        )
        off = await repo.insert_mirror(
            session,
            MirrorInput(name="off", https_url="https://off.example/", enabled=False),
            NOW,
        )
        up_id, off_id = up.mirror.id, off.mirror.id
        session.add(
            MirrorStateRow(
                mirror_id=up_id,
                health="up",
                lagging=True,
                scan_failed=False,
                last_good_scan=1700000000.5,
                last_scan_error="",
            )
        )
        await session.execute(
            insert(OriginFileRow),
            [
                {
                    "id": i,
                    "path": f"pub/f{i}.iso",
                    "size": 1000 + i,
                    "mtime": 1600000000 + i,
                    "sha256": None if i % 2 else "ab" * 32,
                    "changed_at": 1650000000.25 + i,
                }
                for i in range(1, 2501)
            ],
        )
        await session.execute(
            insert(MirrorFileDiffRow),
            [
                {"mirror_id": up_id, "file_id": 7, "kind": "missing"},
                {"mirror_id": up_id, "file_id": 8, "kind": "size", "seen_size": 3},
                {"mirror_id": off_id, "file_id": 7, "kind": "mtime", "seen_mtime": 5},
                *(
                    {"mirror_id": off_id, "file_id": i, "kind": "missing"}
                    for i in range(1001, 2501)
                ),
            ],
        )
        await session.execute(
            insert(MirrorFileConfirmationRow),
            [{"mirror_id": up_id, "file_id": 9, "checked_at": 1700000100.0}],
        )
        await repo.bump_version(session, files=None)
        await session.commit()

    async with sessions() as session:
        source = await index_load.load_index_source(session)

    assert source.version == 1
    assert [(m.name, m.enabled) for m, _ in source.mirrors] == [("up", True), ("off", False)]
    states = {m.name: s for m, s in source.mirrors}
    assert states["up"] == MirrorState(
        health=Health.UP, lagging=True, scan_failed=False, last_good_scan=1700000000.5
    )
    assert states["off"] == MirrorState()  # no state row yet
    assert len(source.files) == 2500
    assert sorted(source.files)[0] == (1, "pub/f1.iso", 1001, 1600000001, None, 1650000001.25)
    assert sorted(source.files)[1] == (2, "pub/f2.iso", 1002, 1600000002, "ab" * 32, 1650000002.25)
    assert all(type(f) is tuple for f in source.files)  # plain tuples, not Row objects
    off_missing = [(off_id, i) for i in range(1001, 2501)]
    assert sorted(source.diffs) == sorted([(up_id, 7), (up_id, 8), (off_id, 7), *off_missing])
    assert sorted(source.missing_kinds) == sorted([(up_id, 7), *off_missing])
    assert list(source.confirmations) == [(up_id, 9, 1700000100.0)]


async def test_deleting_a_mirror_takes_its_state_and_diffs(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    async with sessions() as session:
        rec = await repo.insert_mirror(
            session, MirrorInput(name="gone", http_url="http://gone.example/"), NOW
        )
        session.add(OriginFileRow(id=1, path="a", size=1, mtime=1, changed_at=1.0))
        await session.flush()
        session.add(MirrorStateRow(mirror_id=rec.mirror.id, health="down"))
        session.add(MirrorFileDiffRow(mirror_id=rec.mirror.id, file_id=1, kind="missing"))
        await session.commit()
    async with sessions() as session:
        assert await repo.delete_mirror(session, "gone")
        await session.commit()
    async with sessions() as session:
        for table in (MirrorStateRow, MirrorFileDiffRow):
            count = await session.scalar(select(func.count()).select_from(table))
            assert count == 0, table.__tablename__
