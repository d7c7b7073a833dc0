"""API tokens: only the hash is stored, revoked and wrong tokens fail, last use is recorded."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import tokens
from mirrorhub.db.models import ApiTokenRow
from mirrorhub.errors import Conflict, NotFound, ValidationError

Sessions = async_sessionmaker[AsyncSession]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def test_create_stores_only_the_hash(sessions: Sessions) -> None:
    info, secret = await tokens.create_token(sessions, "CI", created_by="cli", now=lambda: T0)
    assert info.name == "ci" and info.active and info.created_at == T0
    assert secret.startswith("mh_") and len(secret) > 40
    assert secret.startswith(info.prefix) and len(info.prefix) < 16
    async with sessions() as s:
        row = (await s.scalars(select(ApiTokenRow))).one()
    assert row.token_hash == tokens.hash_token(secret)
    assert secret not in (row.token_hash, row.prefix)


async def test_verify_accepts_the_secret_and_records_last_use(sessions: Sessions) -> None:
    _, secret = await tokens.create_token(sessions, "ci", now=lambda: T0)
    used = await tokens.verify_token(sessions, secret, now=lambda: T0 + timedelta(hours=1))
    assert used is not None and used.last_used_at == T0 + timedelta(hours=1)
    # Within the resolution the timestamp is not rewritten (no write per API call).
    again = await tokens.verify_token(
        sessions, secret, now=lambda: T0 + timedelta(hours=1, seconds=5)
    )
    assert again is not None and again.last_used_at == T0 + timedelta(hours=1)
    listed = await tokens.list_tokens(sessions)
    assert [t.last_used_at for t in listed] == [T0 + timedelta(hours=1)]


@pytest.mark.parametrize("wrong", ["", "mh_", "mh_nope", "Bearer", "x" * 5000, "mh_" + "a" * 300])
async def test_verify_refuses_wrong_secrets(sessions: Sessions, wrong: str) -> None:
    await tokens.create_token(sessions, "ci")
    assert await tokens.verify_token(sessions, wrong) is None


async def test_revoked_tokens_fail_and_names_can_be_reused(sessions: Sessions) -> None:
    _, secret = await tokens.create_token(sessions, "ci")
    revoked = await tokens.revoke_token(sessions, "CI", now=lambda: T0)
    assert revoked.revoked_at == T0 and not revoked.active
    assert await tokens.verify_token(sessions, secret) is None
    # Revoking twice keeps the first time.
    assert (await tokens.revoke_token(sessions, "ci")).revoked_at == T0
    _, fresh = await tokens.create_token(sessions, "ci")
    assert await tokens.verify_token(sessions, fresh) is not None
    assert await tokens.verify_token(sessions, secret) is None


async def test_errors(sessions: Sessions) -> None:
    await tokens.create_token(sessions, "ci")
    with pytest.raises(Conflict):
        await tokens.create_token(sessions, "ci")
    with pytest.raises(ValidationError) as exc:
        await tokens.create_token(sessions, "no spaces")
    assert "name" in exc.value.fields
    with pytest.raises(NotFound):
        await tokens.revoke_token(sessions, "other")
    with pytest.raises(NotFound):
        await tokens.revoke_token(sessions, "bad name!")
