"""The admin app in-process (httpx + ASGITransport, lifespan driven here), with three users.

alice  admin
olga   operator, assigned to mirror "one"
oscar  operator, no mirrors
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from mirrorhub import services, users
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.settings import Settings, load_settings
from mirrorhub.web.app import create_app

PASSWORD = "correct horse battery"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def seed(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        s = session_factory(engine)
        await users.add_user(s, "alice", PASSWORD, "admin")
        await users.add_user(s, "olga", PASSWORD, "operator")
        await users.add_user(s, "oscar", PASSWORD, "operator")
        for name in ("one", "two"):
            await services.add_mirror(
                s,
                {"name": name, "http_url": f"http://{name}.example.org/pub/", "country": "DE"},
            )
        await users.assign(s, "olga", "one", True)
    finally:
        await engine.dispose()


def csrf_of(html: str) -> str:
    found = _CSRF.search(html)
    assert found, "no CSRF field in the page"
    return found.group(1)


@dataclass
class Admin:
    client: httpx.AsyncClient
    settings: Settings

    async def csrf(self, path: str = "/-/admin/login") -> str:
        return csrf_of((await self.client.get(path)).text)

    async def login(self, name: str, password: str = PASSWORD) -> httpx.Response:
        token = await self.csrf()
        return await self.client.post(
            "/-/admin/login", data={"username": name, "password": password, "csrf": token}
        )

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, page: str | None = None
    ) -> httpx.Response:
        """POST with the CSRF token from ``page`` (default: the mirror list)."""
        token = await self.csrf(page or "/-/admin/mirrors")
        return await self.client.post(path, data={**(data or {}), "csrf": token})


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[None]:
    """Drive the ASGI lifespan of ``app`` around the block."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    task = asyncio.create_task(app(scope, inbox.get, outbox.put))
    await inbox.put({"type": "lifespan.startup"})
    message = await outbox.get()
    assert message["type"] == "lifespan.startup.complete", message
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


@contextlib.asynccontextmanager
async def admin_client(settings: Settings) -> AsyncIterator[Admin]:
    app = create_app(settings)
    async with running(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield Admin(c, settings)


def make_settings(db_url: str, **extra: str) -> Settings:
    env = {"MIRRORHUB_DATABASE_URL": db_url, "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true"}
    env.update({f"MIRRORHUB_{k.upper()}": v for k, v in extra.items()})
    return load_settings(env)


@pytest.fixture
async def admin(db_url: str) -> AsyncIterator[Admin]:
    settings = make_settings(db_url)
    await seed(settings)
    async with admin_client(settings) as env:
        yield env


__all__ = ["PASSWORD", "Admin", "admin", "admin_client", "csrf_of", "make_settings", "seed"]
