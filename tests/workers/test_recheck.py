"""Targeted re-checks against a real nginx mirror, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import services
from mirrorhub.db import index_load, repositories
from mirrorhub.db.models import MirrorFileConfirmationRow, MirrorStateRow, OriginFileRow
from mirrorhub.domain import Client, Options, Reason
from mirrorhub.index import IndexConfig, build_index, parse_address
from mirrorhub.settings import Settings
from mirrorhub.workers.recheck import recheck_all
from tests.servers import make_tree, nginx_autoindex

Sessions = async_sessionmaker[AsyncSession]
NEW = 1_700_000_000
OLD = NEW - 86_400


async def test_recheck_confirms_only_mirrors_with_the_new_version(
    sessions: Sessions, tmp_path: Path
) -> None:
    fresh_tree = make_tree(
        tmp_path / "fresh", {"pub/new.iso": (5000, NEW), "pub/old.iso": (100, OLD)}
    )
    stale_tree = make_tree(tmp_path / "stale", {"pub/new.iso": (4000, OLD)})
    settings = dataclasses.replace(Settings(), allow_private_mirrors=True, min_redirect_size=0)
    with (
        nginx_autoindex(fresh_tree, "127.0.0.2", workdir=tmp_path / "n1") as fresh_url,
        nginx_autoindex(stale_tree, "127.0.0.3", workdir=tmp_path / "n2") as stale_url,
    ):
        for name, url in (("fresh", fresh_url), ("stale", stale_url)):
            await services.add_mirror(sessions, {"name": name, "http_url": url}, allow_private=True)
        async with sessions.begin() as s:
            await s.execute(
                insert(OriginFileRow),
                [
                    {
                        "id": 1,
                        "path": "pub/new.iso",
                        "size": 5000,
                        "mtime": NEW,
                        "changed_at": 2000.0,
                    },
                    {
                        "id": 2,
                        "path": "pub/old.iso",
                        "size": 100,
                        "mtime": OLD,
                        "changed_at": 500.0,
                    },
                ],
            )
            for mirror_id in (1, 2):
                s.add(MirrorStateRow(mirror_id=mirror_id, health="up", last_good_scan=1000.0))
        async with sessions() as s:
            version_before = await repositories.current_version(s)

        report = await recheck_all(sessions, settings, clock=lambda: 3000.0)

        assert (report.checked, report.confirmed) == (2, 1)  # new.iso on both; old.iso not stale
        async with sessions() as s:
            rows = (await s.execute(select(MirrorFileConfirmationRow))).scalars().all()
            assert [(r.mirror_id, r.file_id, r.checked_at) for r in rows] == [(1, 1, 3000.0)]
            assert await repositories.current_version(s) == version_before + 1
            source = await index_load.load_index_source(s)
        index = build_index(source, IndexConfig())
        client = Client(parse_address("192.0.2.1"))
        d = index.decide(
            index.lookup("pub/new.iso"), client, Options(), random.Random(1), full=True
        )  # type: ignore[arg-type]
        assert d.chosen is not None and d.chosen.mirror.name == "fresh"
        assert {e.mirror.name: e.reason for e in d.excluded} == {"stale": Reason.STALE}

        # A second round has nothing left to ask the fresh mirror.
        report = await recheck_all(sessions, settings, clock=lambda: 3001.0)
        assert (report.checked, report.confirmed) == (1, 0)


async def test_recheck_refuses_private_addresses_by_default(
    sessions: Sessions, tmp_path: Path
) -> None:
    tree = make_tree(tmp_path / "t", {"pub/new.iso": (5000, NEW)})
    with nginx_autoindex(tree, "127.0.0.2", workdir=tmp_path / "n") as url:
        await services.add_mirror(sessions, {"name": "m", "http_url": url}, allow_private=True)
        async with sessions.begin() as s:
            await s.execute(
                insert(OriginFileRow),
                [
                    {
                        "id": 1,
                        "path": "pub/new.iso",
                        "size": 5000,
                        "mtime": NEW,
                        "changed_at": 2000.0,
                    }
                ],
            )
            s.add(MirrorStateRow(mirror_id=1, health="up", last_good_scan=1000.0))
        report = await recheck_all(sessions, dataclasses.replace(Settings(), min_redirect_size=0))
        assert (report.checked, report.confirmed) == (1, 0)
