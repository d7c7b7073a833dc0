"""The JSON API in-process: token auth, mirror writes, decisions, statistics, JSON errors."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from mirrorhub import tokens
from mirrorhub.db import repositories
from mirrorhub.db.models import JobRow, OriginFileRow
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.settings import Settings, load_settings
from mirrorhub.web.app import create_app
from mirrorhub.web.openapi import MAX_BODY

MIRROR = {"name": "One", "http_url": "http://127.0.0.2:9/pub", "country": "DE",
          "networks": ["10.0.0.0/8"], "contact": "ops@example.org"}  # fmt: skip


@dataclass
class Env:
    client: httpx.AsyncClient
    settings: Settings
    token: str
    revoked: str

    def auth(self, token: str | None = None) -> dict[str, str]:
        return {"authorization": f"Bearer {token or self.token}"}

    async def post(self, path: str, body: Any = None) -> httpx.Response:
        if body is None:
            return await self.client.post(path, headers=self.auth())
        # ASCII JSON, so that lone surrogates travel as \ud800 escapes.
        headers = {**self.auth(), "content-type": "application/json"}
        return await self.client.post(path, content=json.dumps(body).encode(), headers=headers)


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[None]:
    """Drive the ASGI lifespan of ``app`` around the block."""
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"},
                                    "state": {}}, inbox.get, outbox.put))  # fmt: skip
    await inbox.put({"type": "lifespan.startup"})
    assert (await outbox.get())["type"] == "lifespan.startup.complete"
    try:
        yield
    finally:
        await inbox.put({"type": "lifespan.shutdown"})
        await outbox.get()
        await task


async def seed(settings: Settings) -> tuple[str, str]:
    engine = create_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        _, token = await tokens.create_token(sessions, "ci")
        _, revoked = await tokens.create_token(sessions, "old")
        await tokens.revoke_token(sessions, "old")
        async with sessions() as s:
            s.add(OriginFileRow(path="pub/x.iso", size=1 << 20, mtime=1, sha256="ab" * 32,
                                changed_at=1.0))  # fmt: skip
            await repositories.bump_version(s, files=None)
            await s.commit()
        return token, revoked
    finally:
        await engine.dispose()


@pytest.fixture
async def env(db_url: str) -> AsyncIterator[Env]:
    settings = load_settings(
        {"MIRRORHUB_DATABASE_URL": db_url, "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true"}
    )
    token, revoked = await seed(settings)
    app = create_app(settings)
    async with running(app):
        transport = httpx.ASGITransport(app=app, client=("192.0.2.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://dl.test") as c:
            yield Env(c, settings, token, revoked)


def assert_error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = r.json()
    assert isinstance(body["error"], str) and body["error"]
    return body


# --- auth ---


async def test_writes_refuse_missing_wrong_and_revoked_tokens(env: Env) -> None:
    r = await env.client.post("/-/api/mirrors", json=MIRROR)
    assert_error(r, 401)
    assert r.headers["www-authenticate"].startswith("Bearer")
    for header in (
        f"Bearer {env.revoked}",
        "Bearer mh_wrong",
        f"Basic {env.token}",
        "Bearer",
        f"bearer {env.token[:-1]}",
    ):
        r = await env.client.post("/-/api/mirrors", json=MIRROR, headers={"authorization": header})
        assert_error(r, 401)
    for path in ("/-/api/mirrors/one/enable", "/-/api/mirrors/one/scan"):
        assert_error(await env.client.post(path), 401)
    assert_error(await env.client.delete("/-/api/mirrors/one"), 401)
    assert_error(await env.client.patch("/-/api/mirrors/one", json={}), 401)
    # Nothing was written.
    assert (await env.client.get("/-/api/mirrors")).json() == {"mirrors": []}


async def test_a_valid_token_writes_and_is_recorded(env: Env) -> None:
    r = await env.post("/-/api/mirrors", MIRROR)
    assert r.status_code == 201, r.text
    assert r.headers["location"] == "/-/api/mirrors/one"
    engine = create_engine(env.settings.database_url)
    try:
        listed = await tokens.list_tokens(session_factory(engine))
    finally:
        await engine.dispose()
    assert {t.name: t.last_used_at is not None for t in listed} == {"ci": True, "old": False}


# --- mirrors ---


async def test_mirror_lifecycle(env: Env) -> None:
    created = (await env.post("/-/api/mirrors", MIRROR)).json()
    assert created["name"] == "one" and created["http_url"] == "http://127.0.0.2:9/pub/"
    assert created["continent"] == "EU" and created["contact"] == "ops@example.org"

    public = (await env.client.get("/-/api/mirrors/ONE")).json()
    assert public["name"] == "one" and "contact" not in public and "notes" not in public
    private = (await env.client.get("/-/api/mirrors/one", headers=env.auth())).json()
    assert private["contact"] == "ops@example.org"
    listed = (await env.client.get("/-/api/mirrors")).json()["mirrors"]
    assert [m["name"] for m in listed] == ["one"]

    r = await env.client.patch(
        "/-/api/mirrors/one",
        json={"name": "two", "capacity": 250, "scope": ["pub/iso/"], "contact": None},
        headers=env.auth(),
    )
    assert r.status_code == 200, r.text
    edited = r.json()
    assert (edited["name"], edited["capacity"], edited["scope"], edited["contact"]) == (
        "two", 250, ["pub/iso/"], "",
    )  # fmt: skip
    assert_error(await env.client.get("/-/api/mirrors/one"), 404)

    assert (await env.post("/-/api/mirrors/two/disable")).json()["enabled"] is False
    assert (await env.post("/-/api/mirrors/two/enable")).json()["enabled"] is True

    r = await env.client.delete("/-/api/mirrors/two", headers=env.auth())
    assert r.status_code == 204 and r.content == b""
    assert_error(await env.client.delete("/-/api/mirrors/two", headers=env.auth()), 404)


async def test_a_created_mirror_answers_every_named_operation(env: Env) -> None:
    # The name is stored in lower case; the answer's name and Location are what a client
    # follows, so each named operation must find the mirror by them.
    r = await env.post("/-/api/mirrors", {**MIRROR, "name": "QW9"})
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.headers["location"]) == ("qw9", "/-/api/mirrors/qw9")
    where = r.headers["location"]
    for path in (where, where.upper().replace("/-/API/MIRRORS/", "/-/api/mirrors/")):
        assert (await env.client.get(path)).json()["name"] == "qw9"
    assert (await env.post(f"{where}/disable")).json()["enabled"] is False
    assert (await env.post(f"{where}/enable")).json()["enabled"] is True
    assert (await env.post(f"{where}/scan")).status_code == 202
    r = await env.client.patch(where, json={"capacity": 5}, headers=env.auth())
    assert (r.status_code, r.headers["content-location"]) == (200, where)
    # A rename moves it: the answer says where, and the old name is gone.
    r = await env.client.patch(where, json={"name": "Renamed"}, headers=env.auth())
    assert (r.status_code, r.headers["content-location"]) == (200, "/-/api/mirrors/renamed")
    assert_error(await env.post(f"{where}/disable"), 404)
    assert (await env.post("/-/api/mirrors/renamed/disable")).json()["enabled"] is False
    r = await env.client.delete("/-/api/mirrors/renamed", headers=env.auth())
    assert r.status_code == 204


async def test_conflicts_and_not_found(env: Env) -> None:
    await env.post("/-/api/mirrors", MIRROR)
    assert_error(await env.post("/-/api/mirrors", {**MIRROR, "name": "ONE"}), 409)
    await env.post("/-/api/mirrors", {**MIRROR, "name": "two"})
    r = await env.client.patch("/-/api/mirrors/two", json={"name": "one"}, headers=env.auth())
    assert_error(r, 409)
    assert_error(await env.post("/-/api/mirrors/nope/enable"), 404)
    assert_error(await env.post("/-/api/mirrors/nope/scan"), 404)
    assert_error(await env.client.get("/-/api/mirrors/a%0Ab"), 404)


INVALID_BODIES: list[tuple[Any, set[str]]] = [
    ({"name": "x", "http_url": "http://127.0.0.2/", "capacity": "10"}, {"capacity"}),
    ({"name": "x", "http_url": "http://127.0.0.2/", "capacity": True}, {"capacity"}),
    ({"name": "x", "http_url": "http://127.0.0.2/", "capacity": 1.5}, {"capacity"}),
    ({"name": "x", "http_url": "http://127.0.0.2/", "enabled": "yes"}, {"enabled"}),
    ({"name": "x", "http_url": "http://127.0.0.2/", "networks": "10.0.0.0/8"}, {"networks"}),
    ({"name": "x", "http_url": "http://127.0.0.2/", "networks": ["a b"]}, {"networks"}),
    ({"name": "x", "http_url": "http://127.0.0.2/", "networks": [1]}, {"networks"}),
    ({"name": "x", "http_url": "http://127.0.0.2/", "latitude": 91}, {"latitude"}),
    ({"name": "x", "http_url": "http://127.0.0.2/", "bogus": 1}, {"bogus"}),
    ({"name": None, "http_url": "http://127.0.0.2/"}, {"name"}),
    ({"name": " x", "http_url": "http://127.0.0.2/"}, {"name"}),
    ({"name": "x", "http_url": "\ud800"}, {"http_url"}),
    ({"name": "x", "notes": "n" * 4001, "http_url": "http://127.0.0.2/"}, {"notes"}),
    ({"http_url": "http://127.0.0.2/"}, {"name"}),
    ({"name": "x"}, {"http_url"}),  # the services' cross-field rule
    ({"name": "x", "http_url": "ftp://h/"}, {"http_url"}),  # the services' URL rule
    ({"name": "x", "http_url": "http://127.0.0.2/", "country": "XX"}, {"country"}),
    ([], {"body"}),
    ("x", {"body"}),
]


async def test_invalid_bodies_are_422_with_fields(env: Env) -> None:
    # One app for every case: each case is one request.
    for body, fields in INVALID_BODIES:
        r = await env.post("/-/api/mirrors", body)
        assert set(assert_error(r, 422)["fields"]) == fields, body


async def test_edit_checks_types_too(env: Env) -> None:
    await env.post("/-/api/mirrors", MIRROR)
    r = await env.client.patch("/-/api/mirrors/one", json={"capacity": None}, headers=env.auth())
    assert set(assert_error(r, 422)["fields"]) == {"capacity"}


MALFORMED = [b"{", b'{"name": NaN}', b'{"name": Infinity}', b"\xff\xfe{", b"",
             b'{"asn": ' + b"9" * 5000 + b"}",
             b"[" * (MAX_BODY // 2 - 1) + b"]" * (MAX_BODY // 2 - 1)]  # fmt: skip


async def test_malformed_json_is_400(env: Env) -> None:
    headers = {**env.auth(), "content-type": "application/json"}
    for raw in MALFORMED:
        r = await env.client.post("/-/api/mirrors", content=raw, headers=headers)
        assert_error(r, 400)


async def test_body_limits_and_media_type(env: Env) -> None:
    big = json.dumps({"name": "x", "notes": "n" * (MAX_BODY + 1)}).encode()
    headers = {**env.auth(), "content-type": "application/json"}
    assert_error(await env.client.post("/-/api/mirrors", content=big, headers=headers), 413)

    async def chunks() -> AsyncIterator[bytes]:  # no content-length: counted while read
        for _ in range(MAX_BODY // 1024 + 2):
            yield b" " * 1024

    r = await env.client.post("/-/api/mirrors", content=chunks(), headers=headers)
    assert_error(r, 413)
    r = await env.client.post(
        "/-/api/mirrors", content=b"name=x", headers={**env.auth(), "content-type": "text/plain"}
    )
    assert_error(r, 415)


async def test_unknown_paths_and_methods_answer_json(env: Env) -> None:
    assert_error(await env.client.get("/-/api/nothing"), 404)
    r = await env.client.put("/-/api/mirrors")
    assert set(assert_error(r, 405)) >= {"error"}
    assert r.headers["allow"] == "GET, HEAD, POST"
    r = await env.client.get("/-/api/mirrors/one/enable")
    assert_error(r, 405)
    assert r.headers["allow"] == "POST"


# --- scans ---


async def test_scan_without_workers_runs_in_the_dispatcher(env: Env) -> None:
    await env.post("/-/api/mirrors", MIRROR)
    r = await env.post("/-/api/mirrors/one/scan")
    assert r.status_code == 202
    assert r.json()["runner"] == "dispatcher" and r.json()["status"] in ("queued", "running")
    for _ in range(200):  # the mirror does not answer: the scan fails, and says so
        mirror = (await env.client.get("/-/api/mirrors/one")).json()
        if mirror["last_scan_error"]:
            break
        await asyncio.sleep(0.05)
    assert mirror["last_scan_error"]


async def test_scan_with_workers_brings_the_job_forward(env: Env) -> None:
    created = await env.post("/-/api/mirrors", MIRROR)
    assert created.status_code == 201
    engine = create_engine(env.settings.database_url)
    sessions = session_factory(engine)
    try:
        record = await repositories_get(sessions, "one")
        key = f"scan:{record}"
        async with sessions.begin() as s:
            s.add(JobRow(key=key, next_run=4e9, lease_owner="", lease_until=0.0, failures=0,
                         last_error=""))  # fmt: skip
        r = await env.post("/-/api/mirrors/one/scan")
        assert r.status_code == 202 and r.json() == {
            "mirror": "one", "status": "queued", "runner": "worker",
        }  # fmt: skip
        async with sessions() as s:
            job = (await s.scalars(select(JobRow).where(JobRow.key == key))).one()
        assert job.next_run < 4e9
    finally:
        await engine.dispose()


async def repositories_get(sessions: Any, name: str) -> int:
    async with sessions() as s:
        row = await repositories.get_mirror_row(s, name)
        assert row is not None
        return int(row.id)


# --- decisions ---


async def test_file_decision_for_an_address(env: Env) -> None:
    await env.post("/-/api/mirrors", MIRROR)
    r = await env.client.get("/-/api/files/pub/x.iso", params={"address": "198.51.100.4"})
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["path"] == "pub/x.iso" and d["client"]["address"] == "198.51.100.4"
    assert d["file"]["size"] == 1 << 20 and d["file"]["sha256"] == "ab" * 32
    # A fresh install: the index may or may not have the new mirror yet; either way the
    # decision is complete and says why nobody was chosen.
    assert d["outcome"] in ("origin", "mirror")
    r = await env.client.get("/-/api/files/pub/x.iso", params={"country": "FR", "avoid": "DE,US",
                                                               "https": "true"})  # fmt: skip
    assert r.status_code == 200
    opts = r.json()["options"]
    assert (opts["country"], opts["avoid"], opts["https_only"]) == ("FR", ["DE", "US"], True)
    default = (await env.client.get("/-/api/files/pub/x.iso")).json()
    assert default["client"]["address"] == "192.0.2.7"


BAD_FILE_REQUESTS = [
    ("/-/api/files/pub/x.iso?address=1.2.3", 400),
    ("/-/api/files/pub/x.iso?address=" + "1" * 300, 400),
    ("/-/api/files/pub/x.iso?country=XX", 400),
    ("/-/api/files/pub/x.iso?country=de", 400),
    ("/-/api/files/pub/x.iso?avoid=DE,,FR", 400),
    ("/-/api/files/pub/x.iso?https=maybe", 400),
    ("/-/api/files/pub/nothing.iso", 404),
    ("/-/api/files/pub/", 404),
    ("/-/api/files/pub", 404),
    ("/-/api/files/pub/%00x", 404),
    ("/-/api/files/pub//x.iso", 404),
]


async def test_file_decision_errors(env: Env) -> None:
    for url, status in BAD_FILE_REQUESTS:
        assert_error(await env.client.get(url), status)


# --- statistics and the document ---


async def test_stats_endpoints(env: Env) -> None:
    summary = (await env.client.get("/-/api/stats", params={"days": 3})).json()
    assert summary["days"] == 3 and summary["downloads"] == 0 and len(summary["per_day"]) == 3
    for kind in ("files", "mirrors", "countries", "days"):
        r = await env.client.get(f"/-/api/stats/{kind}", params={"days": 7})
        assert r.status_code == 200 and r.json()["days"] == 7, (kind, r.text)
    assert (await env.client.get("/-/api/stats/months")).json() == {"items": []}
    for bad in ("0", "367", "x", "-1", "٣"):
        assert_error(await env.client.get("/-/api/stats", params={"days": bad}), 400)
    assert_error(await env.client.get("/-/api/stats/files", params={"limit": 0}), 400)


async def test_openapi_document_is_served(env: Env) -> None:
    r = await env.client.get("/-/api/openapi.json")
    assert r.status_code == 200 and r.json()["openapi"].startswith("3.1")
    assert "/-/api/status" in r.json()["paths"]
