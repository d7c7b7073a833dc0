"""Passwords, signed session cookies, CSRF tokens and the sign-in throttle.

* Passwords: argon2id (argon2-cffi's defaults, RFC 9106 low-memory profile); hashes are
  upgraded on sign-in when the parameters change.
* Sessions: a signed, timestamped cookie (itsdangerous) holding the user id, the user's
  ``session_epoch`` and a CSRF token. Bumping the epoch (password change, removal) ends every
  session of that user at once; nothing is stored server-side per session, so any dispatcher
  sharing the database can check any cookie.
* The signing key is ``MIRRORHUB_SECRET_KEY`` or a random key stored in ``app_secrets``.
* Throttle: failed sign-ins are rows in ``login_attempts``; too many for one account or one
  address within the window refuse further attempts before the password is even checked.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped

from mirrorhub.db.models import AppSecretRow, LoginAttemptRow, UserRow
from mirrorhub.settings import Settings

Sessions = async_sessionmaker[AsyncSession]
SECRET_NAME = "session"  # noqa: S105 - a row name, not a secret
_hasher = PasswordHasher()  # argon2id
# Verified against when the user does not exist, so both failures take the same time.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(encoded: str, password: str) -> bool:
    try:
        return _hasher.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(encoded: str) -> bool:
    try:
        return _hasher.check_needs_rehash(encoded)
    except InvalidHashError:
        return True


# --- the signing key --------------------------------------------------------------------------


async def signing_key(sessions: Sessions, settings: Settings) -> str:
    """The configured key, else the one in the database (created by whoever comes first)."""
    if settings.secret_key:
        return settings.secret_key
    async with sessions() as session:
        found = await session.get(AppSecretRow, SECRET_NAME)
        if found is not None:
            return found.value
        session.add(AppSecretRow(name=SECRET_NAME, value=secrets.token_urlsafe(48)))
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()  # another dispatcher won the race: use its key
    async with sessions() as session:
        row = await session.get(AppSecretRow, SECRET_NAME)
        assert row is not None
        return row.value


# --- session cookies --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SessionData:
    """What a session cookie carries. ``user_id`` is None before sign-in (CSRF only)."""

    csrf: str
    user_id: int | None = None
    epoch: int = 0


def new_session(user_id: int | None = None, epoch: int = 0) -> SessionData:
    return SessionData(secrets.token_urlsafe(32), user_id, epoch)


class SessionCodec:
    """Signs and checks session cookies; a cookie older than ``max_age`` is worthless."""

    def __init__(self, key: str, max_age: float) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="mirrorhub.session")
        self.max_age = max_age

    def dumps(self, data: SessionData) -> str:
        payload = {"c": data.csrf, "u": data.user_id, "e": data.epoch}
        return str(self._serializer.dumps(payload))

    def loads(self, cookie: str | None) -> SessionData | None:
        if not cookie or len(cookie) > 4096:
            return None
        try:
            raw = self._serializer.loads(cookie, max_age=int(self.max_age))
        except BadSignature:  # also SignatureExpired
            return None
        if not isinstance(raw, dict):
            return None
        csrf, user, epoch = raw.get("c"), raw.get("u"), raw.get("e")
        if not isinstance(csrf, str) or not isinstance(epoch, int):
            return None
        if user is not None and not isinstance(user, int):
            return None
        return SessionData(csrf, user, epoch)


def csrf_ok(session: SessionData | None, submitted: str | None) -> bool:
    """Constant-time comparison of the form's token with the session's."""
    if session is None or not submitted:
        return False
    return hmac.compare_digest(session.csrf.encode(), submitted.encode())


# --- sign-in ----------------------------------------------------------------------------------


class Throttled(Exception):
    """Too many failed sign-ins for this account or this address: try again later."""


@dataclass(frozen=True, slots=True)
class SignedIn:
    user_id: int
    name: str
    role: str
    epoch: int


async def _failures(session: AsyncSession, column: Mapped[str], value: str, since: float) -> int:
    count = await session.scalar(
        select(func.count())
        .select_from(LoginAttemptRow)
        .where(column == value, LoginAttemptRow.at >= since)
    )
    return int(count or 0)


async def authenticate(
    sessions: Sessions,
    settings: Settings,
    username: str,
    password: str,
    address: str,
    now: float,
) -> SignedIn | None:
    """The user for these credentials, None when they are wrong; raises Throttled.

    The caller shows the same message for an unknown name and a wrong password.
    """
    name = username.strip().lower()[:64]
    address = address[:64]
    since = now - settings.login_window_seconds
    async with sessions() as session:
        # Old failures only matter for the window: prune them as we go.
        await session.execute(delete(LoginAttemptRow).where(LoginAttemptRow.at < since))
        if (
            await _failures(session, LoginAttemptRow.username, name, since)
            >= settings.login_max_failures_per_account
            or await _failures(session, LoginAttemptRow.address, address, since)
            >= settings.login_max_failures_per_address
        ):
            await session.commit()
            raise Throttled()
        user = await session.scalar(select(UserRow).where(UserRow.name == name))
        ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
        if user is None or not ok:
            session.add(LoginAttemptRow(at=now, username=name, address=address))
            await session.commit()
            return None
        if needs_rehash(user.password_hash):
            user.password_hash = hash_password(password)
        user.last_login_at = datetime.fromtimestamp(now, UTC)
        await session.execute(delete(LoginAttemptRow).where(LoginAttemptRow.username == name))
        await session.commit()
        return SignedIn(user.id, user.name, user.role, user.session_epoch)


async def session_user(sessions: Sessions, data: SessionData | None) -> SignedIn | None:
    """The signed-in user of a session, if its epoch is still current."""
    if data is None or data.user_id is None:
        return None
    async with sessions() as session:
        user = await session.get(UserRow, data.user_id)
    if user is None or user.session_epoch != data.epoch:
        return None
    return SignedIn(user.id, user.name, user.role, user.session_epoch)


__all__ = [
    "SessionCodec",
    "SessionData",
    "SignedIn",
    "Throttled",
    "authenticate",
    "csrf_ok",
    "hash_password",
    "needs_rehash",
    "new_session",
    "session_user",
    "signing_key",
    "verify_password",
]
