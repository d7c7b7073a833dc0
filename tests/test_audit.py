"""Every mirror change made through the service layer leaves an audit entry."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import audit, services

Sessions = async_sessionmaker[AsyncSession]


async def test_mirror_changes_are_audited_with_actor_and_diff(sessions: Sessions) -> None:
    await services.add_mirror(
        sessions, {"name": "m1", "http_url": "http://m1.example/pub/", "country": "DE"}
    )
    await services.edit_mirror(
        sessions, "m1", {"capacity": "250", "contact": "ops@m1"}, actor="user:alice"
    )
    await services.edit_mirror(sessions, "m1", {"capacity": "250"}, actor="user:alice")  # no-op
    await services.set_enabled(sessions, "m1", False, actor="token:ci")
    await services.remove_mirror(sessions, "m1", actor="user:bob")
    entries, total = await audit.entries(sessions)
    assert total == 4
    remove, disable, edit, add = entries
    assert (add.actor, add.action, add.target) == ("cli", "mirror.add", "m1")
    assert add.changes["http_url"] == (None, "http://m1.example/pub/")
    assert add.changes["country"] == (None, "DE")
    assert (edit.actor, edit.action) == ("user:alice", "mirror.edit")
    assert edit.changes == {"capacity": (1000, 250), "contact": ("", "ops@m1")}
    assert (disable.actor, disable.action, disable.changes) == (
        "token:ci",
        "mirror.disable",
        {"enabled": (True, False)},
    )
    assert (remove.actor, remove.action) == ("user:bob", "mirror.remove")
    assert remove.changes["name"] == ("m1", None)


async def test_paging_and_filters(sessions: Sessions) -> None:
    for i in range(5):
        await audit.write(sessions, f"user:u{i % 2}", "mirror.scan", f"m{i}")
    page, total = await audit.entries(sessions, limit=2, offset=0)
    assert total == 5 and [e.target for e in page] == ["m4", "m3"]
    mine, total = await audit.entries(sessions, actor="user:u1")
    assert total == 2 and {e.target for e in mine} == {"m1", "m3"}
    assert (await audit.entries(sessions, target="m2"))[1] == 1
