"""/-/stats and its JSON: render, escape hostile paths and names, refuse bad parameters."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy import insert

from mirrorhub.db.models import StatsCountryDailyRow, StatsFileDailyRow, StatsMirrorDailyRow
from mirrorhub.settings import Settings
from mirrorhub.web.app import create_app
from mirrorhub.web.state import AppState

NOW = datetime(2025, 6, 15, 12, tzinfo=UTC).timestamp()
EVIL_PATH = 'pub/<script>alert("x")</script>&amp;.iso'
EVIL_MIRROR = '"><img src=x onerror=alert(1)>'


@pytest.fixture
async def app(db_url: str, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = dataclasses.replace(Settings(), database_url=db_url, geoip_dir=tmp_path / "geoip")
    dispatcher = create_app(settings, clock=lambda: NOW)
    state: AppState = dispatcher.inner.state.mirrorhub  # type: ignore[attr-defined]
    async with state.sessions() as s, s.begin():
        for day, n in ((date(2025, 6, 14), 3), (date(2025, 6, 15), 2)):
            await s.execute(
                insert(StatsFileDailyRow).values(
                    day=day, path=EVIL_PATH, downloads=n, bytes=n * 1000
                )
            )
            await s.execute(
                insert(StatsFileDailyRow).values(day=day, path="pub/ok.iso", downloads=1, bytes=500)
            )
            await s.execute(
                insert(StatsMirrorDailyRow).values(
                    day=day, mirror=EVIL_MIRROR, downloads=n, bytes=n * 1000
                )
            )
            await s.execute(
                insert(StatsMirrorDailyRow).values(day=day, mirror="", downloads=1, bytes=500)
            )
            await s.execute(
                insert(StatsCountryDailyRow).values(
                    day=day, country="DE", downloads=n + 1, bytes=n * 1000 + 500
                )
            )
        await s.execute(
            insert(StatsMirrorDailyRow).values(
                day=date(2025, 1, 1), mirror="old", downloads=7, bytes=7
            )
        )
    transport = httpx.ASGITransport(app=dispatcher, client=("127.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://dl.example") as client:
        yield client
    await state.engine.dispose()


async def test_the_page_renders_charts_and_escapes_everything(app: httpx.AsyncClient) -> None:
    r = await app.get("/-/stats?days=7")
    assert r.status_code == 200, r.text
    assert "<svg" in r.text and "Downloads per day" in r.text
    assert "<script>alert" not in r.text and "<img src=x" not in r.text
    assert "&lt;script&gt;alert(" in r.text and "&#34;&gt;&lt;img src=x" in r.text
    assert "(origin)" in r.text and "DE" in r.text
    assert "2025-01" in r.text  # the months chart reaches back before the period
    assert r.headers["content-security-policy"].startswith("default-src 'none'")


async def test_json_has_the_same_figures(app: httpx.AsyncClient) -> None:
    r = await app.get("/-/stats.json?days=7&limit=1")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert (body["from"], body["to"], body["days"]) == ("2025-06-09", "2025-06-15", 7)
    assert body["downloads"] == 7 and body["bytes"] == 6000
    assert body["files"] == [{"path": EVIL_PATH, "downloads": 5, "bytes": 5000}]
    assert body["mirrors"] == [
        {"mirror": EVIL_MIRROR, "downloads": 5, "bytes": 5000},
        {"mirror": None, "downloads": 2, "bytes": 1000},
    ]
    assert body["countries"] == [{"country": "DE", "downloads": 7, "bytes": 6000}]
    assert [d["downloads"] for d in body["per_day"]] == [0, 0, 0, 0, 0, 4, 3]
    assert "live" in body  # this dispatcher's unflushed counts
    # A JSON body never lets markup through unescaped into an HTML context by sniffing.
    assert r.headers["x-content-type-options"] == "nosniff"
    json.loads(r.text)


async def test_json_parts(app: httpx.AsyncClient) -> None:
    files = (await app.get("/-/stats/files.json?days=1")).json()
    assert files["files"][0] == {"path": EVIL_PATH, "downloads": 2, "bytes": 2000}
    assert set(files) == {"from", "to", "days", "files"}
    days = (await app.get("/-/stats/days.json?days=2")).json()
    assert [d["day"] for d in days["per_day"]] == ["2025-06-14", "2025-06-15"]
    months = (await app.get("/-/stats/months.json")).json()
    assert months["per_month"][0] == {"month": "2025-01-01", "downloads": 7, "bytes": 7}
    assert (await app.get("/-/stats/nothing.json")).status_code == 404


@pytest.mark.parametrize("query", ["days=0", "days=367", "days=x", "limit=-1", "days=1e3"])
async def test_bad_parameters_are_a_400(app: httpx.AsyncClient, query: str) -> None:
    r = await app.get(f"/-/stats.json?{query}")
    assert r.status_code == 400 and "error" in r.json()
    assert (await app.get(f"/-/stats?{query}")).status_code == 400


async def test_a_database_error_is_a_503_not_a_500(tmp_path: Path) -> None:
    settings = dataclasses.replace(
        Settings(),
        database_url=f"sqlite:///{tmp_path}/no-tables.db",  # every query fails
        geoip_dir=tmp_path / "geoip",
    )
    dispatcher = create_app(settings, clock=lambda: NOW)
    transport = httpx.ASGITransport(app=dispatcher, client=("127.0.0.1", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://dl.example") as client:
        page = await client.get("/-/stats")
        assert page.status_code == 503 and "unavailable" in page.text
        r = await client.get("/-/stats.json")
        assert r.status_code == 503 and "unavailable" in r.json()["error"]
    await dispatcher.inner.state.mirrorhub.engine.dispose()  # type: ignore[attr-defined]
