"""Password hashing, session cookies, the signing key and the sign-in throttle."""

from __future__ import annotations

import dataclasses

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import auth, users
from mirrorhub.settings import Settings, load_settings

Sessions = async_sessionmaker[AsyncSession]
PASSWORD = "correct horse battery"


def test_argon2id_hash_and_verify() -> None:
    encoded = auth.hash_password(PASSWORD)
    assert encoded.startswith("$argon2id$")
    assert auth.verify_password(encoded, PASSWORD)
    assert not auth.verify_password(encoded, PASSWORD + "x")
    assert not auth.verify_password("not a hash", PASSWORD)
    assert auth.hash_password(PASSWORD) != encoded  # salted


def test_session_cookie_round_trip_and_tampering() -> None:
    codec = auth.SessionCodec("k" * 40, 3600)
    data = auth.new_session(7, 2)
    cookie = codec.dumps(data)
    assert codec.loads(cookie) == data
    assert codec.loads(cookie[:-2] + ("AA" if not cookie.endswith("AA") else "BB")) is None
    assert auth.SessionCodec("j" * 40, 3600).loads(cookie) is None  # another key
    assert codec.loads("") is None and codec.loads(None) is None and codec.loads("x" * 5000) is None


def test_session_cookie_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    codec = auth.SessionCodec("k" * 40, 60)
    cookie = codec.dumps(auth.new_session(1))
    import itsdangerous.timed

    real = itsdangerous.timed.time.time
    monkeypatch.setattr(itsdangerous.timed.time, "time", lambda: real() + 120)
    assert codec.loads(cookie) is None


def test_csrf_comparison() -> None:
    data = auth.new_session()
    assert auth.csrf_ok(data, data.csrf)
    assert not auth.csrf_ok(data, data.csrf + "x")
    assert not auth.csrf_ok(data, "")
    assert not auth.csrf_ok(None, data.csrf)


async def test_signing_key_is_stored_once_or_configured(sessions: Sessions) -> None:
    settings = Settings()
    first = await auth.signing_key(sessions, settings)
    assert len(first) >= 32
    assert await auth.signing_key(sessions, settings) == first  # every dispatcher agrees
    configured = dataclasses.replace(settings, secret_key="s" * 32)
    assert await auth.signing_key(sessions, configured) == "s" * 32


def test_secret_key_setting_is_checked() -> None:
    from mirrorhub.errors import SettingsError

    with pytest.raises(SettingsError):
        load_settings({"MIRRORHUB_SECRET_KEY": "short"})
    assert load_settings({"MIRRORHUB_SECRET_KEY": ""}).secret_key is None


async def test_authenticate_and_generic_failures(sessions: Sessions) -> None:
    settings = Settings()
    await users.add_user(sessions, "alice", PASSWORD, "admin")
    ok = await auth.authenticate(sessions, settings, "Alice", PASSWORD, "192.0.2.1", 1000.0)
    assert ok is not None and ok.name == "alice" and ok.role == "admin"
    assert await auth.authenticate(sessions, settings, "alice", "wrong", "192.0.2.1", 1001) is None
    assert (
        await auth.authenticate(sessions, settings, "nobody", PASSWORD, "192.0.2.1", 1002) is None
    )


async def test_per_account_throttle(sessions: Sessions) -> None:
    settings = dataclasses.replace(Settings(), login_max_failures_per_account=3)
    await users.add_user(sessions, "alice", PASSWORD, "admin")
    for i in range(3):
        assert (
            await auth.authenticate(sessions, settings, "alice", "bad", f"192.0.2.{i}", 100 + i)
            is None
        )
    with pytest.raises(auth.Throttled):  # even the right password, from a new address
        await auth.authenticate(sessions, settings, "alice", PASSWORD, "198.51.100.1", 200)
    # Failures age out of the window.
    later = 100 + settings.login_window_seconds + 10
    assert await auth.authenticate(sessions, settings, "alice", PASSWORD, "198.51.100.1", later)


async def test_per_address_throttle(sessions: Sessions) -> None:
    settings = dataclasses.replace(Settings(), login_max_failures_per_address=4)
    await users.add_user(sessions, "alice", PASSWORD, "admin")
    for i in range(4):
        await auth.authenticate(sessions, settings, f"user{i}", "bad", "203.0.113.9", 100 + i)
    with pytest.raises(auth.Throttled):
        await auth.authenticate(sessions, settings, "alice", PASSWORD, "203.0.113.9", 110)
    assert await auth.authenticate(sessions, settings, "alice", PASSWORD, "203.0.113.10", 111)


async def test_session_epoch_ends_sessions(sessions: Sessions) -> None:
    await users.add_user(sessions, "alice", PASSWORD, "admin")
    who = await auth.authenticate(sessions, Settings(), "alice", PASSWORD, "192.0.2.1", 1.0)
    assert who is not None
    data = auth.new_session(who.user_id, who.epoch)
    assert await auth.session_user(sessions, data) == who
    await users.set_password(sessions, "alice", "another long password")
    assert await auth.session_user(sessions, data) is None
