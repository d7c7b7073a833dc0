"""API tokens: create, list, revoke and verify.

A token is ``mh_`` + 32 random bytes (URL-safe base64), shown once at creation. Only its
SHA-256 is stored, plus a short prefix so lists can tell tokens apart. A database leak
therefore gives nobody a usable token, and a lookup by hash needs no secret comparison
beyond a constant-time check of the stored hash.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import ApiTokenRow
from mirrorhub.errors import Conflict, NotFound, ValidationError
from mirrorhub.services import Clock, utcnow
from mirrorhub.validation import parse_name

Sessions = async_sessionmaker[AsyncSession]

TOKEN_PREFIX = "mh_"  # noqa: S105 (a marker, not a secret)
SECRET_BYTES = 32
DISPLAY_CHARS = 8  # characters of the secret kept for display, after "mh_"
MAX_TOKEN_LENGTH = 256  # anything longer is not one of ours: refuse before hashing
# last_used_at is written at most this often per token, so the API costs no write per call.
LAST_USED_RESOLUTION = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class TokenInfo:
    name: str
    prefix: str
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def hash_token(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def _utc(value: datetime | None) -> datetime | None:
    # SQLite returns timezone-aware columns naive; they were written in UTC.
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _info(row: ApiTokenRow) -> TokenInfo:
    created = _utc(row.created_at)
    assert created is not None
    return TokenInfo(
        row.name,
        row.prefix,
        row.created_by,
        created,
        _utc(row.last_used_at),
        _utc(row.revoked_at),
    )


def _name(name: str) -> str:
    try:
        return parse_name(name.strip())
    except ValueError as exc:
        raise ValidationError({"name": str(exc)}) from None


async def create_token(
    sessions: Sessions, name: str, *, created_by: str = "cli", now: Clock = utcnow
) -> tuple[TokenInfo, str]:
    """A new token and its secret (shown once, never stored).

    A revoked token's name may be reused: the revoked row is replaced.
    """
    key = _name(name)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(SECRET_BYTES)
    row = ApiTokenRow(
        name=key,
        token_hash=hash_token(secret),
        prefix=secret[: len(TOKEN_PREFIX) + DISPLAY_CHARS],
        created_by=created_by[:128],
        created_at=now(),
    )
    async with sessions() as session:
        existing = await session.scalar(select(ApiTokenRow).where(ApiTokenRow.name == key))
        if existing is not None:
            if existing.revoked_at is None:
                raise Conflict(f"a token named {key!r} already exists (revoke it first)")
            await session.execute(delete(ApiTokenRow).where(ApiTokenRow.id == existing.id))
        session.add(row)
        try:
            await session.commit()
        except IntegrityError:
            raise Conflict(f"a token named {key!r} already exists") from None
        return _info(row), secret


async def list_tokens(sessions: Sessions) -> list[TokenInfo]:
    async with sessions() as session:
        rows = (await session.scalars(select(ApiTokenRow).order_by(ApiTokenRow.name))).all()
        return [_info(r) for r in rows]


async def revoke_token(sessions: Sessions, name: str, *, now: Clock = utcnow) -> TokenInfo:
    """Revoke a token at once; revoking a revoked token keeps its first revocation time."""
    try:
        key = parse_name(name.strip())
    except ValueError:
        key = name  # finds nothing: a NotFound, like an unknown name
    async with sessions() as session:
        row = await session.scalar(select(ApiTokenRow).where(ApiTokenRow.name == key))
        if row is None:
            raise NotFound(f"no token named {name!r}")
        if row.revoked_at is None:
            row.revoked_at = now()
            await session.commit()
        return _info(row)


async def verify_token(sessions: Sessions, secret: str, *, now: Clock = utcnow) -> TokenInfo | None:
    """The active token with this secret, or None; records when it was last used."""
    if not secret.startswith(TOKEN_PREFIX) or len(secret) > MAX_TOKEN_LENGTH:
        return None
    digest = hash_token(secret)
    async with sessions() as session:
        row = await session.scalar(select(ApiTokenRow).where(ApiTokenRow.token_hash == digest))
        # The lookup already matched the hash; compare_digest keeps the final check
        # constant-time should the lookup ever become a prefix or case-insensitive match.
        if row is None or not hmac.compare_digest(row.token_hash, digest):
            return None
        if row.revoked_at is not None:
            return None
        moment = now()
        last = _utc(row.last_used_at)
        if last is None or moment - last >= LAST_USED_RESOLUTION:
            row.last_used_at = moment
            await session.commit()
        return _info(row)


__all__ = [
    "TokenInfo",
    "create_token",
    "hash_token",
    "list_tokens",
    "revoke_token",
    "verify_token",
]
