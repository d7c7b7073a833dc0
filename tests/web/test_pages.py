"""The public status page, its JSON and the map, against a real database (SQLite + PostgreSQL).

Rows are inserted directly, so every number on the page is known in advance.
"""

from __future__ import annotations

import asyncio
import re
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import markupsafe
import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub import services, status_query
from mirrorhub.db import repositories
from mirrorhub.db.models import (
    MirrorFileConfirmationRow,
    MirrorFileDiffRow,
    MirrorRow,
    MirrorStateRow,
    OriginFileRow,
    ProbeResultRow,
)
from mirrorhub.domain import CHANGE_PENDING
from mirrorhub.load import make_view
from mirrorhub.settings import Settings
from mirrorhub.status_query import StatusSource, disjoint
from mirrorhub.web.app import create_app
from mirrorhub.web.redirect import Dispatcher
from mirrorhub.web.state import AppState
from mirrorhub.workers.mirror_scan import scan_mirror
from mirrorhub.workers.origin_scan import scan_origin
from mirrorhub.workers.probe import probe_mirrors
from tests.servers import free_port, make_tree, nginx_autoindex

Sessions = async_sessionmaker[AsyncSession]
NOW = 1_700_002_200.0  # 50 min into an hour
T = datetime.fromtimestamp(NOW, UTC)
XSS = '<script>alert("x")</script>'


def at(seconds_ago: float) -> datetime:
    return datetime.fromtimestamp(NOW - seconds_ago, UTC)


def mirror(id: int, name: str, **kw: Any) -> MirrorRow:
    fields: dict[str, Any] = {
        "http_url": f"http://m{id}.example/",
        "country": "DE",
        "created_at": T,
        "updated_at": T,
    }
    fields.update(kw)
    return MirrorRow(id=id, name=name, **fields)


async def fill(sessions: Sessions) -> None:
    """10 origin files: 8 under pub/ changed at t=100, 2 under other/ changed at t=300.

    - alpha: up, scanned at 200, one diff (pub/1), confirmed other/1 -> (10 - 2 - 1 + 1)/10
    - bravo: scope pub/, down, scanned at 400, diffs pub/2 and other/2 (out of scope) -> 7/8
    - charlie: lagging 2 h, never scanned -> 0
    - delta: scan failing; echo: disabled; foxtrot: no state row (unknown)
    - x-site: an XSS payload in every free-text field
    """
    async with sessions.begin() as s:
        s.add_all(
            [
                mirror(1, "alpha", latitude=52.5, longitude=13.4),
                mirror(2, "bravo", country="FR", scope="pub/"),
                mirror(3, "charlie", country="US", latitude=40.7, longitude=-74.0),
                mirror(4, "delta", country="JP"),
                mirror(5, "echo", enabled=False),
                mirror(6, "foxtrot", country=None),
                mirror(7, "x-site", country="GB", contact=XSS, notes=XSS),
            ]
        )
        for i in range(1, 9):
            s.add(OriginFileRow(id=i, path=f"pub/{i}", size=1, mtime=1, changed_at=100.0))
        for i in (9, 10):
            s.add(OriginFileRow(id=i, path=f"other/{i - 8}", size=1, mtime=1, changed_at=300.0))
        await s.flush()
        s.add_all(
            [
                MirrorStateRow(
                    mirror_id=1,
                    health="up",
                    last_good_scan=200.0,
                    lag_seconds=30.0,
                    last_probe_at=at(60),
                    scheme_health="http=up:0:3",
                ),
                MirrorStateRow(
                    mirror_id=2,
                    health="down",
                    last_good_scan=400.0,
                    last_probe_error=XSS,
                    scheme_health="http=down:3:0",
                ),
                MirrorStateRow(mirror_id=3, health="up", lagging=True, lag_seconds=7200.0),
                MirrorStateRow(
                    mirror_id=4, health="up", scan_failed=True, last_scan_error="refused"
                ),
                MirrorStateRow(mirror_id=5, health="up", last_good_scan=400.0),
                MirrorStateRow(mirror_id=7, health="up", last_good_scan=400.0, last_scan_error=XSS),
                MirrorFileDiffRow(mirror_id=1, file_id=1, kind="missing"),
                MirrorFileDiffRow(mirror_id=2, file_id=2, kind="size"),
                MirrorFileDiffRow(mirror_id=2, file_id=10, kind="missing"),
                MirrorFileConfirmationRow(mirror_id=1, file_id=9, checked_at=350.0),
                # a re-check older than the change rescues nothing
                MirrorFileConfirmationRow(mirror_id=1, file_id=10, checked_at=250.0),
            ]
        )
        # alpha: 3 good + 1 bad probes this hour, one good downsampled row (4 samples)
        # 3 hours ago, and one bad probe 30 h ago (outside the window).
        for ago, ok, samples in [(60, True, 1), (120, True, 1), (180, False, 1), (240, True, 1)]:
            s.add(ProbeResultRow(mirror_id=1, scheme="http", at=at(ago), ok=ok, samples=samples))
        s.add(ProbeResultRow(mirror_id=1, scheme="http", at=at(3 * 3600), ok=True, samples=4))
        s.add(ProbeResultRow(mirror_id=1, scheme="http", at=at(30 * 3600), ok=False))
        s.add(ProbeResultRow(mirror_id=2, scheme="http", at=at(100), ok=False))


@pytest.fixture
async def app(db_url: str, sessions: Sessions) -> AsyncIterator[Dispatcher]:
    await fill(sessions)
    dispatcher = create_app(Settings(database_url=db_url), clock=lambda: NOW)
    yield dispatcher
    await app_state(dispatcher).engine.dispose()  # no lifespan ran to do it


def app_state(app: Dispatcher) -> AppState:
    state: AppState = app.inner.state.mirrorhub  # type: ignore[attr-defined]
    return state


def client(app: Dispatcher) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_json_matches_the_rows(app: Dispatcher) -> None:
    async with client(app) as c:
        r = await c.get("/-/api/status")
    assert r.status_code == 200
    assert r.headers["cache-control"] == "public, max-age=5"
    doc = r.json()
    by_name = {m["name"]: m for m in doc["mirrors"]}
    assert list(by_name) == ["alpha", "bravo", "charlie", "delta", "foxtrot", "x-site"]
    assert {n: m["status"] for n, m in by_name.items()} == {
        "alpha": "up",
        "bravo": "down",
        "charlie": "lagging",
        "delta": "scan failing",
        "foxtrot": "unknown",
        "x-site": "up",
    }
    alpha = by_name["alpha"]
    assert alpha["coverage"] == pytest.approx(0.8)
    assert alpha["lag_seconds"] == 30.0
    assert alpha["last_check"] == pytest.approx(NOW - 60)
    assert alpha["availability_24h"] == pytest.approx(7 / 8)
    assert alpha["availability_hourly"][-1] == pytest.approx(0.75)
    assert alpha["availability_hourly"][-4] == 1.0
    assert alpha["availability_hourly"][-2] is None
    assert (alpha["latitude"], alpha["longitude"]) == (52.5, 13.4)
    assert by_name["bravo"]["coverage"] == pytest.approx(7 / 8)
    assert by_name["bravo"]["availability_24h"] == 0.0
    assert by_name["bravo"]["down_schemes"] == ["http"]
    assert by_name["charlie"]["coverage"] == 0.0
    assert by_name["x-site"]["coverage"] == 1.0
    assert by_name["foxtrot"]["latitude"] is None
    assert doc["summary"]["text"] == "2 up, 1 lagging, 1 down, 1 scan failing, 1 unknown"
    assert doc["summary"]["disabled"] == 1
    assert doc["attributions"] == []  # no GeoIP database configured


async def test_json_filters(app: Dispatcher) -> None:
    async with client(app) as c:
        de = (await c.get("/-/api/status?country=de")).json()
        down = (await c.get("/-/api/status?status=down")).json()
        junk = (await c.get("/-/api/status?status=%3Cb%3E&sort=evil")).json()
    assert [m["name"] for m in de["mirrors"]] == ["alpha"]
    assert [m["name"] for m in down["mirrors"]] == ["bravo"]
    assert len(junk["mirrors"]) == 6


async def test_page_shows_every_enabled_mirror(app: Dispatcher) -> None:
    async with client(app) as c:
        r = await c.get("/-/status")
        root = await c.get("/-/")
    assert root.status_code == 302 and root.headers["location"] == "/-/status"
    assert r.status_code == 200
    assert "default-src 'none'" in r.headers["content-security-policy"]
    body = r.text
    assert "2 up, 1 lagging, 1 down, 1 scan failing, 1 unknown" in body
    rows = re.findall(r"<tr>\s*<td>([^<]+)</td>", body)
    assert rows == ["alpha", "bravo", "charlie", "delta", "foxtrot", "x-site"]
    assert "echo" not in rows
    assert '<span class="badge scan-failing"' in body and "80.0 %" in body
    assert "2 h" in body  # charlie's lag
    assert body.count('class="sparkline"') == 6
    assert 'class="wide-only"' in body  # columns a phone hides
    # no inline script or style, nothing from another origin
    assert "<script>" not in body and "style=" not in body and "onclick" not in body.lower()
    srcs = re.findall(r'(?:src|href)="([^"]+)"', body)
    assert all(
        s.startswith(("/", "#")) or s.startswith("https://www.naturalearthdata.com") for s in srcs
    ), srcs


async def test_page_sorts_and_filters_without_javascript(app: Dispatcher) -> None:
    async with client(app) as c:
        lag = (await c.get("/-/status?sort=lag&order=desc")).text
        us = (await c.get("/-/status?country=US")).text
        named = (await c.get("/-/status?q=ALP")).text
    assert re.findall(r"<tr>\s*<td>([^<]+)</td>", lag)[:2] == ["charlie", "alpha"]
    assert re.findall(r"<tr>\s*<td>([^<]+)</td>", us) == ["charlie"]
    assert '<option value="US" selected>' in us
    assert re.findall(r"<tr>\s*<td>([^<]+)</td>", named) == ["alpha"]


async def test_payloads_render_inert(app: Dispatcher, sessions: Sessions) -> None:
    async with sessions.begin() as s:
        s.add(mirror(8, XSS, country="<s"))
        s.add(MirrorStateRow(mirror_id=8, health="down", last_probe_error=XSS))
    async with client(app) as c:
        page = (await c.get("/-/status?q=" + XSS)).text
        svg = (await c.get("/-/map.svg")).text
        doc = (await c.get("/-/api/status")).json()
    assert XSS not in page and XSS not in svg
    assert str(markupsafe.escape(XSS)) in page  # shown, as text
    assert "<s<" not in page
    assert XSS in [m["name"] for m in doc["mirrors"]]  # JSON carries the raw value
    ET.fromstring(svg.split("\n", 1)[1])  # noqa: S314 (our own output)


async def test_map_has_one_dot_per_placed_mirror(app: Dispatcher) -> None:
    async with client(app) as c:
        r = await c.get("/-/map.svg")
        page = (await c.get("/-/status")).text
    assert r.headers["content-type"].startswith("image/svg+xml")
    root = ET.fromstring(r.content)  # noqa: S314 (our own output)
    ns = {"svg": "http://www.w3.org/2000/svg"}
    dots = root.findall(".//svg:circle", ns)
    titles = sorted(d.find("svg:title", ns).text or "" for d in dots)  # type: ignore[union-attr]
    # foxtrot has neither coordinates nor a country; the others are placed (bravo, delta
    # and x-site at their country's centroid).
    assert [t.split(" ")[0] for t in titles] == ["alpha", "bravo", "charlie", "delta", "x-site"]
    alpha = next(d for d in dots if (d.find("svg:title", ns).text or "").startswith("alpha"))  # type: ignore[union-attr]
    assert "up" in alpha.attrib["class"]
    assert 500 < float(alpha.attrib["cx"]) < 560 and 80 < float(alpha.attrib["cy"]) < 100
    assert page.count('<circle class="dot') == 5


async def test_the_model_is_cached_for_a_few_seconds(app: Dispatcher, sessions: Sessions) -> None:
    async with client(app) as c:
        first = (await c.get("/-/api/status")).json()
        async with sessions.begin() as s:
            s.add(mirror(9, "golf"))
        again = (await c.get("/-/api/status")).json()
        assert again == first  # served from the cache
        cache = app_state(app).extras["status_cache"]
        cache.built -= 60  # expire: the next view starts a refresh, still answers at once
        stale = (await c.get("/-/api/status")).json()
        assert stale == first
        assert cache._task is not None
        await cache._task
        fresh = (await c.get("/-/api/status")).json()
    assert "golf" in [m["name"] for m in fresh["mirrors"]]


# --- against real mirrors ---------------------------------------------------------------------

T0 = 1_700_000_000


async def test_json_matches_the_database_after_real_scans_and_probes(
    db_url: str, sessions: Sessions, tmp_path: Path
) -> None:
    """nginx mirrors on loopback, scanned and probed by the real workers; then every figure
    of /-/api/status is recomputed here from the raw rows, file by file, and compared."""
    published = time.time() - 13 * 3600  # missed for longer than max_lag_seconds (12 h)
    trace = (f"{int(published)}\n".encode(), T0)
    origin_files: dict[str, tuple[int, int] | tuple[bytes, int]] = {
        "pub/a.iso": (3000, T0),
        "pub/b.iso": (2000, T0),
        "pub/c.iso": (1000, T0),
        "other/d.txt": (100, T0),
        "project/trace/mirrorhub": trace,
    }
    behind_files = {k: v for k, v in origin_files.items() if k != "pub/b.iso"}
    behind_files["pub/c.iso"] = (999, T0)
    behind_files["project/trace/mirrorhub"] = (f"{int(published - 2 * 86400)}\n".encode(), T0)
    origin = make_tree(tmp_path / "origin", origin_files)
    full = make_tree(tmp_path / "full", origin_files)
    behind = make_tree(tmp_path / "behind", behind_files)
    settings = Settings(
        database_url=db_url,
        origin_dir=origin,
        allow_private_mirrors=True,
        scan_timeout_seconds=10,
        scan_request_timeout_seconds=3,
        probe_connect_timeout_seconds=1,
        probe_timeout_seconds=2,
    )
    await scan_origin(sessions, origin)
    dead_port = free_port("127.0.0.4")  # nothing listens there
    with (
        nginx_autoindex(full, "127.0.0.2", workdir=tmp_path / "n2") as full_url,
        nginx_autoindex(behind, "127.0.0.3", workdir=tmp_path / "n3") as behind_url,
    ):
        for name, url, country in [
            ("full", full_url, "DE"),
            ("behind", behind_url, "FR"),
            ("gone", f"http://127.0.0.4:{dead_port}/", "US"),
        ]:
            await services.add_mirror(
                sessions,
                {"name": name, "http_url": url, "country": country},
                allow_private=True,
            )
        for name in ("full", "behind", "gone"):
            await scan_mirror(sessions, settings, name)
        for _ in range(settings.probe_down_after):
            await probe_mirrors(sessions, settings)

    app = create_app(settings)
    try:
        async with client(app) as c:
            doc = (await c.get("/-/api/status")).json()
    finally:
        await app_state(app).engine.dispose()
    got = {m["name"]: m for m in doc["mirrors"]}
    expected = await _expected_from_rows(sessions, time.time())
    assert set(got) == set(expected) == {"full", "behind", "gone"}
    for name, want in expected.items():
        m = got[name]
        assert m["status"] == want["status"], name
        assert m["coverage"] == pytest.approx(want["coverage"]), name
        assert m["lag_seconds"] == pytest.approx(want["lag_seconds"]), name
        assert m["last_check"] == pytest.approx(want["last_check"]), name
        assert m["availability_24h"] == pytest.approx(want["availability_24h"]), name
        assert m["country"] == want["country"], name
    # and the figures are the ones the trees were built to give
    assert {n: m["status"] for n, m in got.items()} == {
        "full": "up",
        "behind": "lagging",
        "gone": "down",
    }
    assert got["full"]["coverage"] == 1.0 and got["full"]["availability_24h"] == 1.0
    # b missing, c of another size; the trace file has the same size and mtime as the
    # origin's, so a listing cannot tell them apart (the probe reads it for the lag)
    assert got["behind"]["coverage"] == pytest.approx(3 / 5)
    assert got["gone"]["availability_24h"] == 0.0 and got["gone"]["coverage"] == 0.0
    assert doc["summary"]["text"] == "1 up, 1 lagging, 1 down"


async def _expected_from_rows(sessions: Sessions, now: float) -> dict[str, dict[str, Any]]:
    """The status page's figures, the slow way: every (mirror, file) pair checked in Python."""
    async with sessions() as s:
        mirrors = (await s.execute(select(MirrorRow))).scalars().all()
        states = {r.mirror_id: r for r in (await s.execute(select(MirrorStateRow))).scalars()}
        files = (await s.execute(select(OriginFileRow))).scalars().all()
        diffs = {
            (d.mirror_id, d.file_id) for d in (await s.execute(select(MirrorFileDiffRow))).scalars()
        }
        confirmed = {
            (c.mirror_id, c.file_id): c.checked_at
            for c in (await s.execute(select(MirrorFileConfirmationRow))).scalars()
        }
        probes = (await s.execute(select(ProbeResultRow))).scalars().all()
    out: dict[str, dict[str, Any]] = {}
    for m in mirrors:
        st = states[m.id]
        scope = tuple(m.scope.split())
        in_scope = [f for f in files if not scope or f.path.startswith(scope)]
        fresh = 0
        for f in in_scope:
            checked = confirmed.get((m.id, f.id))
            confirmed_fresh = checked is not None and checked >= f.changed_at
            scanned_fresh = (
                (m.id, f.id) not in diffs
                and st.last_good_scan is not None
                and st.last_good_scan >= f.changed_at
            )
            fresh += confirmed_fresh or scanned_fresh
        window = [
            p
            for p in probes
            if p.mirror_id == m.id
            and now - p.at.replace(tzinfo=UTC).timestamp() < 23 * 3600  # well inside 24 h
        ]
        samples = sum(p.samples for p in window)
        status = (
            "down"
            if st.health == "down"
            else "scan failing"
            if st.scan_failed
            else "lagging"
            if st.lagging
            else st.health
        )
        last_probe = st.last_probe_at
        out[m.name] = {
            "status": status,
            "coverage": fresh / len(in_scope),
            "lag_seconds": st.lag_seconds,
            "last_check": last_probe.replace(tzinfo=UTC).timestamp() if last_probe else None,
            "availability_24h": sum(p.samples for p in window if p.ok) / samples,
            "country": m.country,
        }
    return out


async def test_rebuilds_reuse_only_what_cannot_have_changed(
    db_url: str, sessions: Sessions
) -> None:
    """StatusSource keeps diff counts and finished probe hours between builds; a new good scan
    of one mirror, a new probe and a newly enabled mirror still show on the next build."""
    await fill(sessions)
    source = StatusSource(sessions, clock=lambda: NOW)
    first = {m.name: m for m in (await source.build()).mirrors}
    assert first["alpha"].coverage == pytest.approx(0.8)
    async with sessions.begin() as s:
        # alpha's next good scan (after t=300) finds pub/3 missing too; the re-check
        # confirmation of other/1 is older than the scan and goes, as scan_apply does it
        state = await s.get(MirrorStateRow, 1)
        assert state is not None
        state.last_good_scan = 500.0
        s.add(MirrorFileDiffRow(mirror_id=1, file_id=3, kind="missing"))
        await s.execute(
            delete(MirrorFileConfirmationRow).where(MirrorFileConfirmationRow.mirror_id == 1)
        )
        await repositories.bump_version(s, files=None)
        s.add(ProbeResultRow(mirror_id=1, scheme="http", at=at(10), ok=False))
        echo = await s.get(MirrorRow, 5)
        assert echo is not None
        echo.enabled = True
        s.add(ProbeResultRow(mirror_id=5, scheme="http", at=at(5 * 3600), ok=True))
    second = {m.name: m for m in (await source.build()).mirrors}
    assert second["alpha"].coverage == pytest.approx(0.8)  # (10 - 0 stale - 2 diffs) / 10
    assert second["alpha"].availability[-1] == pytest.approx(3 / 5)
    assert second["alpha"].availability_24h == pytest.approx(7 / 9)
    assert second["bravo"].coverage == first["bravo"].coverage
    assert second["echo"].availability_24h == 1.0  # its older hours were read in full
    assert second["echo"].coverage == 1.0
    # nothing else changed: the next build reads only the probe row written since
    async with sessions.begin() as s:
        s.add(ProbeResultRow(mirror_id=1, scheme="http", at=at(5), ok=True))
        # overlapping prefixes count each file once
        await s.execute(
            update(MirrorRow).where(MirrorRow.id == 2).values(scope="pub/ pub/1 other/")
        )
    third = {m.name: m for m in (await source.build()).mirrors}
    assert source._full_read_hour == int(NOW // 3600) and source._last_id > 0
    assert third["alpha"].availability[-1] == pytest.approx(4 / 6)
    assert third["alpha"].availability_24h == pytest.approx(8 / 10)
    assert third["bravo"].coverage == pytest.approx(8 / 10)  # all 10 files; pub/2, other/2 differ


def test_disjoint_prefixes() -> None:
    assert disjoint(("pub/", "pub/iso/", "other/", "pub2/")) == ("pub/", "other/", "pub2/")
    assert disjoint(()) == ()


# --- load against capacity ----------------------------------------------------------------------


def status_row(page: str, name: str) -> str:
    """The table row with a cell that starts with ``name`` (as the page escapes it)."""
    rows = [r for r in page.split("<tr>") if re.search(rf"<td>{re.escape(name)}[<\s]", r)]
    assert len(rows) == 1, (name, rows)
    return rows[0].split("</tr>")[0]


async def test_status_page_and_json_show_live_load_against_capacity(
    app: Dispatcher, sessions: Sessions
) -> None:
    async with sessions.begin() as s:
        await s.execute(
            update(MirrorRow).where(MirrorRow.name == "charlie").values(capacity=10_000)
        )
    state = app_state(app)
    async with client(app) as c:
        # Before any load sync: every mirror shows 0 of its capacity, and the page says why.
        doc = (await c.get("/-/api/status")).json()
        page = (await c.get("/-/status")).text
        assert doc["load"] == {"window_seconds": 60.0, "sync_seconds": 2.0, "estimated": False}
        assert {m["name"]: (m["load"]["mbps"], m["load"]["capacity_mbps"]) for m in doc["mirrors"]} == {
            "alpha": (0.0, 1000), "bravo": (0.0, 1000), "charlie": (0.0, 10_000),
            "delta": (0.0, 1000), "foxtrot": (0.0, 1000), "x-site": (0.0, 1000),
        }  # fmt: skip
        assert "0 / 10,000 Mbit/s (0 %)" in status_row(page, "charlie")
        assert "0 / 1,000 Mbit/s (0 %)" in status_row(page, "alpha")
        assert "no estimate yet" in page and "held back</span>" not in page

        # A sync swaps in the fleet-wide view: the cached model is reused, the load is live.
        state.extras["load_view"] = make_view(
            {"alpha": 412.3}, {"x-site": 960.0, "charlie": 2_500.0},
            {"alpha": 1000, "x-site": 1000, "charlie": 10_000},
        )  # fmt: skip
        doc = (await c.get("/-/api/status")).json()
        page = (await c.get("/-/status")).text
    loads = {m["name"]: m["load"] for m in doc["mirrors"]}
    assert loads["alpha"] == {"mbps": 412.3, "capacity_mbps": 1000, "utilisation": 0.4123,
                              "factor": 1.0, "held_back": False}  # fmt: skip
    assert loads["x-site"] == {"mbps": 960.0, "capacity_mbps": 1000, "utilisation": 0.96,
                               "factor": 0.25, "held_back": True}  # fmt: skip
    assert loads["charlie"]["utilisation"] == 0.25 and not loads["charlie"]["held_back"]
    assert loads["bravo"]["mbps"] == 0.0
    assert doc["load"]["estimated"] is True

    alpha = status_row(page, "alpha")
    assert "412 / 1,000 Mbit/s (41 %)" in alpha and "held back" not in alpha
    x_site = status_row(page, "x-site")
    assert "960 / 1,000 Mbit/s (96 %)" in x_site
    assert '<span class="badge lagging">held back</span>' in x_site
    assert "near capacity: gets 25 % of its usual share of new downloads" in x_site
    assert "2,500 / 10,000 Mbit/s (25 %)" in status_row(page, "charlie")
    assert "0 / 1,000 Mbit/s (0 %)" in status_row(page, "bravo")
    text = " ".join(page.split())
    assert "over the last 60 s" in text and "updated every 2 s" in text
    assert "(not a measurement at the mirror)" in text
    assert "<script>" not in page and "style=" not in page  # still no inline script or style


async def test_real_redirects_show_up_on_every_view_after_a_load_sync(
    db_url: str, sessions: Sessions
) -> None:
    """The running app: two real redirects of a 375 MB file to a 100 Mbit/s mirror fill it
    (2 x 3,000 Mbit over the 60 s window = 100 Mbit/s); after the next load sync the mirror
    list, the JSON view, the status page and its JSON, and the API all say so."""
    from tests.web.admin_fixtures import running

    for name, host, capacity in [("alpha", "127.0.0.2", 100), ("bravo", "127.0.0.3", 1000)]:
        await services.add_mirror(
            sessions,
            {"name": name, "http_url": f"http://{host}/pub/", "capacity": str(capacity)},
            allow_private=True,
        )
    async with sessions.begin() as s:
        s.add(OriginFileRow(path="pub/big.iso", size=375_000_000, mtime=1, changed_at=1.0))
        for name, health in [("alpha", "up"), ("bravo", "down")]:
            mirror_id = (
                await s.execute(select(MirrorRow.id).where(MirrorRow.name == name))
            ).scalar_one()
            row = await s.get(MirrorStateRow, mirror_id)
            if row is None:
                row = MirrorStateRow(mirror_id=mirror_id)
                s.add(row)
            row.health, row.last_good_scan = health, time.time()
    settings = Settings(database_url=db_url, allow_private_mirrors=True, load_sync_seconds=0.05)
    app = create_app(settings)
    state = app_state(app)
    async with running(app), client(app) as c:
        for _ in range(2):
            r = await c.get("/pub/big.iso")
            assert r.status_code == 302
            assert r.headers["location"] == "http://127.0.0.2/pub/pub/big.iso"
        for _ in range(200):  # the next sync publishes and swaps in the fleet-wide view
            view = state.extras.get("load_view")
            if view is not None and view.mbps.get("alpha", 0.0) > 99.9:
                break
            await asyncio.sleep(0.025)
        else:
            pytest.fail(f"no load sync saw the redirects: {state.extras.get('load_view')}")
        page = (await c.get("/pub/big.iso?mirrorlist")).text
        decision = (await c.get("/pub/big.iso?json")).json()
        status_page = (await c.get("/-/status")).text
        status_doc = (await c.get("/-/api/status")).json()
        mirror_doc = (await c.get("/-/api/mirrors/alpha")).json()
        listed = (await c.get("/-/api/mirrors")).json()
        api_decision = (await c.get("/-/api/files/pub/big.iso")).json()

    full = {"mbps": 100.0, "capacity_mbps": 100, "utilisation": 1.0, "factor": 0.0,
            "held_back": True}  # fmt: skip
    idle = {"mbps": 0.0, "capacity_mbps": 1000, "utilisation": 0.0, "factor": 1.0,
            "held_back": False}  # fmt: skip
    held = "at capacity: gets no new downloads until its load drops"
    for html in (page, status_page):
        alpha = status_row(html, "alpha")
        assert "100 / 100 Mbit/s (100 %)" in alpha, alpha
        assert '<span class="badge lagging">held back</span>' in alpha and held in alpha
        bravo = status_row(html, "bravo")
        assert "0 / 1,000 Mbit/s (0 %)" in bravo and "held back" not in bravo
    for doc in (decision, api_decision):
        assert [(m["mirror"], m["load"]) for m in doc["ranked"]] == [("alpha", full)]
        assert [(e["mirror"], e["reason"], e["load"]) for e in doc["excluded"]] == [
            ("bravo", "down", idle)
        ]
    assert {m["name"]: m["load"] for m in status_doc["mirrors"]} == {"alpha": full, "bravo": idle}
    assert mirror_doc["load"] == full
    assert {m["name"]: m["load"] for m in listed["mirrors"]} == {"alpha": full, "bravo": idle}


async def test_origin_signature_moves_when_a_batch_is_stamped_while_another_is_pending(
    sessions: Sessions,
) -> None:
    async with sessions.begin() as s:
        for i in (1, 2, 3):
            s.add(OriginFileRow(id=i, path=f"pub/{i}", size=1, mtime=1, changed_at=100.0))

    async def write(ids: tuple[int, ...], when: float) -> tuple[int, int, float, int]:
        async with sessions.begin() as s:
            for i in ids:
                (await s.get(OriginFileRow, i)).changed_at = when  # type: ignore[union-attr]
        async with sessions() as s:
            return await status_query.origin_signature(s)

    assert await write((), 0) == (3, 3, 100.0, 0)
    seen = {await write((1,), CHANGE_PENDING)}  # batch A written, pending
    # A stamped while batch B is written: the newest changed_at alone stays pending
    stamped_a = await write((1,), 200.0)
    pending_b = await write((2,), CHANGE_PENDING)
    assert pending_b == (3, 3, 200.0, 1) and pending_b not in seen | {stamped_a}
    assert await write((2,), 300.0) == (3, 3, 300.0, 0)


async def test_histograms_read_in_batches_count_every_file(
    db_url: str, sessions: Sessions, monkeypatch: pytest.MonkeyPatch
) -> None:
    """load_histograms reads (changed_at, files) rows in batches into flat arrays; with one
    row per batch and a time per file, every scope's "changed after t" still counts exactly
    the files it should (SQLite: per prefix, merged; PostgreSQL: one column per scope)."""
    await fill(sessions)
    async with sessions.begin() as s:
        for i in range(11, 31):  # more files, each with its own time
            s.add(OriginFileRow(id=i, path=f"pub/x/{i}", size=1, mtime=1, changed_at=100.0 + i))
    monkeypatch.setattr(status_query, "ROWS_PER_FETCH", 1)
    scopes = {(), ("pub/",), ("pub/x/", "other/"), ("none/",)}
    async with sessions() as s:
        found = await status_query.load_histograms(s, scopes)
        rows = (await s.execute(select(OriginFileRow.path, OriginFileRow.changed_at))).all()
    assert found.keys() == scopes
    for scope, histogram in found.items():
        inside = [t for p, t in rows if not scope or any(p.startswith(q) for q in scope)]
        assert histogram.total == len(inside)
        for t in [0.0, 100.0, 115.0, 130.0, 300.0, 301.0]:
            assert histogram.changed_after(t) == sum(1 for x in inside if x > t), (scope, t)
