"""Targeted re-checks against a real nginx mirror, on SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import services
from mirrorhub.db import index_load, repositories
from mirrorhub.db.index_load import DatabaseLoader
from mirrorhub.db.models import MirrorFileConfirmationRow, MirrorStateRow, OriginFileRow
from mirrorhub.domain import CHANGE_PENDING, Client, Options, Reason
from mirrorhub.index import IndexConfig, build_index, parse_address
from mirrorhub.settings import Settings
from mirrorhub.workers.netpolicy import GuardedTransport
from mirrorhub.workers.origin_scan import scan_origin
from mirrorhub.workers.recheck import recheck_all
from tests.servers import make_tree, nginx_autoindex
from tests.workers.clocks import Ticks

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


class HookedTransport(httpx.AsyncBaseTransport):
    """The real transport, but ``hook`` runs (once) just before the first request is sent."""

    def __init__(self, hook: Callable[[], Awaitable[None]]) -> None:
        self.inner = GuardedTransport(allow_private=True)
        self.hook: Callable[[], Awaitable[None]] | None = hook

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.hook is not None:
            hook, self.hook = self.hook, None
            await hook()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def decide(sessions: Sessions, path: str) -> tuple[str | None, list[tuple[str, Reason]]]:
    """What a dispatcher answers for ``path``: (the mirror chosen, why the others are not)."""
    index = await DatabaseLoader(sessions).build(IndexConfig(), lambda: 0.0)
    pos = index.lookup(path)
    assert pos is not None, path
    d = index.decide(
        pos, Client(parse_address("192.0.2.1")), Options(), random.Random(1), full=True
    )
    return (d.chosen.mirror.name if d.chosen else None), [
        (e.mirror.name, e.reason) for e in d.excluded
    ]


async def test_a_recheck_that_compared_the_old_version_does_not_confirm_the_new(
    sessions: Sessions, tmp_path: Path
) -> None:
    """The race: recheck loads a file's size and mtime, the origin publishes a new version and
    stamps it, and only then recheck reads the clock for its confirmation. That confirmation
    would be later than the new ``changed_at`` although the HEAD was compared with the old
    version, and the mirror would count fresh for a version it may not hold."""
    clock = Ticks()
    path = "pub/a.iso"
    origin = make_tree(tmp_path / "origin", {path: (5000, OLD)})
    mirror_tree = make_tree(tmp_path / "mirror", {path: (5000, OLD)})  # the old version only
    settings = dataclasses.replace(Settings(), allow_private_mirrors=True, min_redirect_size=0)
    with nginx_autoindex(mirror_tree, "127.0.0.2", workdir=tmp_path / "n") as url:
        await services.add_mirror(sessions, {"name": "m", "http_url": url}, allow_private=True)
        async with sessions.begin() as s:  # the mirror's last scan predates the origin's
            s.add(MirrorStateRow(mirror_id=1, health="up", last_good_scan=clock()))
        await scan_origin(sessions, origin, clock=clock)

        # After recheck loaded a.iso's (old) facts, before its HEAD: a new version is published
        # and the origin scan commits and stamps it.
        async def publish() -> None:
            make_tree(origin, {path: (6000, NEW)})
            result = await scan_origin(sessions, origin, clock=clock)
            assert result.changed == 1

        transport = HookedTransport(publish)
        report = await recheck_all(sessions, settings, clock=clock, transport=transport)
        assert transport.hook is None, "the hook did not run"
        assert report.checked == 1  # the HEAD was compared with the old version (and matched)

        async with sessions() as s:
            changed_at = await s.scalar(select(OriginFileRow.changed_at))
            checked_at = list(await s.scalars(select(MirrorFileConfirmationRow.checked_at)))
        assert changed_at is not None
        assert all(t < changed_at for t in checked_at), (
            f"confirmed at {checked_at}, after the new version's changed_at {changed_at}"
        )
        assert await decide(sessions, path) == (None, [("m", Reason.STALE)])

        # The next round compares the new version: the mirror still lacks it, then has it.
        report = await recheck_all(sessions, settings, clock=clock)
        assert (report.checked, report.confirmed) == (1, 0)
        assert await decide(sessions, path) == (None, [("m", Reason.STALE)])
        make_tree(mirror_tree, {path: (6000, NEW)})
        report = await recheck_all(sessions, settings, clock=clock)
        assert (report.checked, report.confirmed) == (1, 1)
        assert await decide(sessions, path) == ("m", [])


async def test_recheck_skips_files_not_stamped_before_its_clock_reading(
    sessions: Sessions, tmp_path: Path
) -> None:
    """Pending rows (committed, not stamped yet) and rows stamped after the round's clock
    reading cannot be confirmed by this round, so they take none of its budget."""
    files = {"pub/pending.iso": CHANGE_PENDING, "pub/later.iso": 5000.0, "pub/a.iso": 2000.0}
    tree = make_tree(tmp_path / "t", {p: (5000, NEW) for p in files})
    settings = dataclasses.replace(
        Settings(), allow_private_mirrors=True, min_redirect_size=0, recheck_max_files=1
    )
    with nginx_autoindex(tree, "127.0.0.2", workdir=tmp_path / "n") as url:
        await services.add_mirror(sessions, {"name": "m", "http_url": url}, allow_private=True)
        async with sessions.begin() as s:
            await s.execute(
                insert(OriginFileRow),
                [
                    {"path": p, "size": 5000, "mtime": NEW, "changed_at": t}
                    for p, t in files.items()
                ],
            )
            s.add(MirrorStateRow(mirror_id=1, health="up", last_good_scan=1000.0))

        report = await recheck_all(sessions, settings, clock=lambda: 3000.0)

        assert (report.checked, report.confirmed) == (1, 1)
        async with sessions() as s:
            rows = await s.execute(
                select(OriginFileRow.path, MirrorFileConfirmationRow.checked_at).join(
                    OriginFileRow, OriginFileRow.id == MirrorFileConfirmationRow.file_id
                )
            )
            assert rows.all() == [("pub/a.iso", 3000.0)]
