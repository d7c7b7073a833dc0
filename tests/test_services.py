"""Mirror use cases on SQLite and PostgreSQL, with an injected clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mirrorhub import services
from mirrorhub.db import repositories as repo
from mirrorhub.db.models import MirrorStateRow
from mirrorhub.db.session import create_engine
from mirrorhub.errors import Conflict, NotFound, ValidationError

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def clock() -> Callable[[], datetime]:
    """A clock that advances one minute per reading."""
    ticks = iter(range(1000))
    return lambda: T0 + timedelta(minutes=next(ticks))


async def version(sessions: Sessions) -> int:
    async with sessions() as session:
        return await repo.current_version(session)


async def add(sessions: Sessions, name: str = "alpha", **fields: str) -> repo.MirrorRecord:
    return await services.add_mirror(
        sessions, {"name": name, "http_url": f"http://{name}.example/", **fields}
    )


async def test_add_then_get(sessions: Sessions) -> None:
    added = await services.add_mirror(
        sessions,
        {"name": "Alpha", "http_url": "http://alpha.example:8080/pub", "country": "fr"},
        now=lambda: T0,
    )
    assert added.mirror.name == "alpha"
    assert added.mirror.http_url == "http://alpha.example:8080/pub/"
    assert (added.mirror.country, added.mirror.continent) == ("FR", "EU")
    assert added.created_at == added.updated_at == T0
    assert await services.get_mirror(sessions, "ALPHA") == added
    assert await version(sessions) == 1


async def test_add_refuses_a_duplicate_name(sessions: Sessions) -> None:
    await add(sessions)
    with pytest.raises(Conflict, match="'alpha' already exists"):
        await add(sessions, "ALPHA")
    assert await version(sessions) == 1


async def test_add_validates_before_touching_the_database(sessions: Sessions) -> None:
    with pytest.raises(ValidationError) as info:
        await services.add_mirror(sessions, {"name": "x", "http_url": "http://evil@x.example/"})
    assert list(info.value.fields) == ["http_url"]
    assert await services.list_mirrors(sessions) == []
    assert await version(sessions) == 0


async def test_private_addresses_need_permission(sessions: Sessions) -> None:
    fields = {"name": "local", "http_url": "http://127.0.0.2:8080/"}
    with pytest.raises(ValidationError):
        await services.add_mirror(sessions, fields)
    added = await services.add_mirror(sessions, fields, allow_private=True)
    assert added.mirror.http_url == "http://127.0.0.2:8080/"
    # Editing something else does not re-check the stored URL.
    edited = await services.edit_mirror(sessions, "local", {"capacity": "5"})
    assert edited.mirror.capacity == 5


async def test_edit_changes_only_what_it_names(sessions: Sessions) -> None:
    now = clock()
    await services.add_mirror(
        sessions,
        {
            "name": "alpha",
            "http_url": "http://alpha.example/",
            "https_url": "https://alpha.example/",
            "country": "DE",
            "scope": "pub/",
        },
        now=now,
    )
    edited = await services.edit_mirror(
        sessions, "alpha", {"https_url": "", "capacity": "300", "country": "us"}, now=now
    )
    m = edited.mirror
    assert (m.http_url, m.https_url, m.capacity) == ("http://alpha.example/", None, 300)
    assert (m.country, m.continent, m.scope) == ("US", "NA", ("pub/",))
    assert edited.created_at == T0
    assert edited.updated_at == T0 + timedelta(minutes=1)
    assert await version(sessions) == 2


async def test_an_edit_that_changes_nothing_writes_nothing(sessions: Sessions) -> None:
    now = clock()
    added = await add(sessions, capacity="100")
    same = await services.edit_mirror(sessions, "alpha", {"capacity": "100"}, now=now)
    assert same == added
    assert await version(sessions) == 1


async def test_rename(sessions: Sessions) -> None:
    await add(sessions, "alpha")
    await add(sessions, "beta")
    with pytest.raises(Conflict):
        await services.edit_mirror(sessions, "alpha", {"name": "Beta"})
    renamed = await services.edit_mirror(sessions, "alpha", {"name": "gamma"})
    assert renamed.mirror.name == "gamma"
    with pytest.raises(NotFound):
        await services.get_mirror(sessions, "alpha")


async def test_edit_cannot_remove_the_last_url(sessions: Sessions) -> None:
    await add(sessions)
    with pytest.raises(ValidationError) as info:
        await services.edit_mirror(sessions, "alpha", {"http_url": ""})
    assert list(info.value.fields) == ["http_url"]
    assert (await services.get_mirror(sessions, "alpha")).mirror.http_url is not None


async def test_enable_and_disable(sessions: Sessions) -> None:
    await add(sessions)
    assert (await services.set_enabled(sessions, "alpha", False)).mirror.enabled is False
    assert await version(sessions) == 2
    assert (await services.set_enabled(sessions, "alpha", False)).mirror.enabled is False
    assert await version(sessions) == 2  # already disabled: nothing to tell the dispatchers
    assert (await services.set_enabled(sessions, "alpha", True)).mirror.enabled is True
    assert await version(sessions) == 3


async def test_remove(sessions: Sessions) -> None:
    await add(sessions, "alpha")
    await add(sessions, "beta")
    await services.remove_mirror(sessions, "Alpha")
    assert [r.mirror.name for r in await services.list_mirrors(sessions)] == ["beta"]
    assert await version(sessions) == 3


@pytest.mark.parametrize(
    "call",
    [
        lambda s: services.get_mirror(s, "nope"),
        lambda s: services.edit_mirror(s, "nope", {"capacity": "1"}),
        lambda s: services.set_enabled(s, "nope", True),
        lambda s: services.remove_mirror(s, "nope"),
        lambda s: services.remove_mirror(s, "not a valid name"),
    ],
)
async def test_unknown_names_are_not_found(sessions: Sessions, call: Callable[..., object]) -> None:
    with pytest.raises(NotFound, match="no mirror named"):
        await call(sessions)  # type: ignore[misc]


async def test_list_shows_state(sessions: Sessions) -> None:
    added = await add(sessions)
    async with sessions() as session:
        session.add(
            MirrorStateRow(
                mirror_id=added.mirror.id, health="down", scan_failed=True, last_scan_error="boom"
            )
        )
        await session.commit()
    (record,) = await services.list_mirrors(sessions)
    assert record.state.health.value == "down"
    assert record.state.scan_failed is True
    assert record.last_scan_error == "boom"


async def test_check_database_accepts_a_migrated_database(engine: AsyncEngine) -> None:
    await services.check_database(engine)


async def test_check_database_names_the_fix(tmp_path: Path) -> None:
    missing = create_engine(f"sqlite:///{tmp_path / 'missing.db'}")
    with pytest.raises(services.DatabaseNotReady, match="run `mirrorhub db upgrade`"):
        await services.check_database(missing)
    assert not (tmp_path / "missing.db").exists()
    await missing.dispose()

    (tmp_path / "empty.db").touch()
    empty = create_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(services.DatabaseNotReady, match=r"^database not initialised: run"):
        await services.check_database(empty)
    await empty.dispose()


async def test_check_database_reports_an_unreachable_server() -> None:
    engine = create_engine("postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(services.DatabaseNotReady, match=r"^cannot open the database: "):
        await services.check_database(engine)
    await engine.dispose()
