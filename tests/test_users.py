"""The user service: accounts, passwords, operator assignments, all audited."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import audit, services, users
from mirrorhub.errors import Conflict, NotFound, ValidationError

Sessions = async_sessionmaker[AsyncSession]
PASSWORD = "correct horse battery"


async def test_add_list_passwd_remove(sessions: Sessions) -> None:
    added = await users.add_user(sessions, "Alice", PASSWORD, "admin", actor="cli")
    assert added.name == "alice" and added.role == "admin"
    await users.add_user(sessions, "olga", PASSWORD, "operator")
    assert [u.name for u in await users.list_users(sessions)] == ["alice", "olga"]
    with pytest.raises(Conflict):
        await users.add_user(sessions, "ALICE", PASSWORD, "operator")
    await users.set_password(sessions, "alice", "a new long password")
    await users.remove_user(sessions, "olga")
    assert [u.name for u in await users.list_users(sessions)] == ["alice"]
    with pytest.raises(NotFound):
        await users.remove_user(sessions, "olga")
    entries, _total = await audit.entries(sessions)
    assert [e.action for e in entries] == ["user.remove", "user.passwd", "user.add", "user.add"]
    assert all(PASSWORD not in str(e.changes) for e in entries)


@pytest.mark.parametrize(
    ("name", "password", "role", "field"),
    [
        ("bad name", PASSWORD, "admin", "name"),
        ("<script>", PASSWORD, "admin", "name"),
        ("bob", "short", "admin", "password"),
        ("bob", PASSWORD, "root", "role"),
    ],
)
async def test_add_user_validation(
    sessions: Sessions, name: str, password: str, role: str, field: str
) -> None:
    with pytest.raises(ValidationError) as info:
        await users.add_user(sessions, name, password, role)
    assert field in info.value.fields


async def test_operator_assignment(sessions: Sessions) -> None:
    olga = await users.add_user(sessions, "olga", PASSWORD, "operator")
    admin = await users.add_user(sessions, "alice", PASSWORD, "admin")
    one = await services.add_mirror(sessions, {"name": "one", "http_url": "http://one.example/"})
    two = await services.add_mirror(sessions, {"name": "two", "http_url": "http://two.example/"})
    await users.assign(sessions, "olga", "one", True, actor="user:alice")
    await users.assign(sessions, "olga", "one", True)  # idempotent
    assert (await users.get_user(sessions, "olga")).mirrors == ("one",)
    assert await users.operators_of(sessions, one.mirror.id) == ["olga"]
    assert await users.may_edit(sessions, olga.id, "operator", one.mirror.id)
    assert not await users.may_edit(sessions, olga.id, "operator", two.mirror.id)
    assert await users.may_edit(sessions, admin.id, "admin", two.mirror.id)
    await users.assign(sessions, "olga", "one", False)
    assert not await users.may_edit(sessions, olga.id, "operator", one.mirror.id)
    with pytest.raises(NotFound):
        await users.assign(sessions, "olga", "nope", True)
    entries, _ = await audit.entries(sessions, target="one")
    assert [e.action for e in entries[:2]] == ["operator.unassign", "operator.assign"]
