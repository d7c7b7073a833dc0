"""/-/metrics: hot-path counters, scrape-time facts, access rules, own registry per app."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from mirrorhub import services
from mirrorhub.db import repositories
from mirrorhub.db.models import MirrorScanRow, MirrorStateRow, OriginFileRow, ProbeResultRow
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.domain import Outcome
from mirrorhub.settings import Settings, load_settings
from mirrorhub.web.app import create_app
from mirrorhub.web.metrics import RedirectMetrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


# --- the recorder alone ---


def test_recorder_counts_by_outcome_and_mirror() -> None:
    registry = CollectorRegistry()
    rec = RedirectMetrics(registry)
    start = time.perf_counter()
    for _ in range(3):
        rec.record(Outcome.MIRROR, "de1", 0, None, {}, start)
    rec.record(Outcome.MIRROR, "fr1", 0, None, {}, start)
    rec.record(Outcome.ORIGIN, None, 1, None, {}, start)
    rec.record(Outcome.NOT_FOUND, None, None, None, {}, start)
    rec.record(Outcome.BAD_REQUEST, None, None, None, {}, start)
    get = registry.get_sample_value
    assert get("mirrorhub_redirects_total", {"outcome": "mirror"}) == 4
    assert get("mirrorhub_redirects_total", {"outcome": "origin"}) == 1
    assert get("mirrorhub_redirects_total", {"outcome": "not_found"}) == 1
    assert get("mirrorhub_redirects_total", {"outcome": "bad_request"}) == 1
    assert get("mirrorhub_mirror_redirects_total", {"mirror": "de1"}) == 3
    assert get("mirrorhub_redirect_duration_seconds_count", {"outcome": "mirror"}) == 4
    assert (
        get("mirrorhub_redirect_duration_seconds_bucket", {"outcome": "mirror", "le": "+Inf"}) == 4
    )

    rec.forget_except(["de1"])  # fr1 was deleted or renamed
    assert get("mirrorhub_mirror_redirects_total", {"mirror": "fr1"}) is None
    rec.record(Outcome.MIRROR, "fr1", 0, None, {}, start)
    assert get("mirrorhub_mirror_redirects_total", {"mirror": "fr1"}) == 1


def test_each_recorder_has_its_own_registry() -> None:
    a, b = CollectorRegistry(), CollectorRegistry()
    RedirectMetrics(a).record(Outcome.ORIGIN, None, None, None, {}, time.perf_counter())
    RedirectMetrics(b)  # a second app in the same process: no duplicate registration
    assert a.get_sample_value("mirrorhub_redirects_total", {"outcome": "origin"}) == 1
    assert b.get_sample_value("mirrorhub_redirects_total", {"outcome": "origin"}) == 0
    assert REGISTRY.get_sample_value("mirrorhub_redirects_total", {"outcome": "origin"}) is None


# --- the whole app ---


@contextlib.asynccontextmanager
async def running(app: Any) -> AsyncIterator[None]:
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


def client(app: Any, peer: str) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=(peer, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://dl.test")


async def seed(settings: Settings) -> None:
    """One healthy, freshly scanned mirror holding pub/x.iso; a probe and a scan each."""
    engine = create_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        record = await services.add_mirror(
            sessions, {"name": "de1", "http_url": "http://127.0.0.2/pub/"}, allow_private=True
        )
        mid = record.mirror.id
        at = datetime(2026, 1, 1, tzinfo=UTC)
        async with sessions() as s:
            s.add(OriginFileRow(path="pub/x.iso", size=1 << 20, mtime=1, sha256=None,
                                changed_at=1.0))  # fmt: skip
            s.add(MirrorStateRow(mirror_id=mid, health="up", last_good_scan=time.time(),
                                 scan_failures=2, probe_failures=0))  # fmt: skip
            for when, ok in ((at.replace(hour=1), False), (at.replace(hour=2), True)):
                s.add(MirrorScanRow(mirror_id=mid, started_at=when, duration_seconds=when.hour,
                                    method="http", ok=ok))  # fmt: skip
                s.add(ProbeResultRow(mirror_id=mid, scheme="http", at=when, ok=ok,
                                     latency_ms=when.hour * 10.0))  # fmt: skip
            await repositories.bump_version(s, files=None)
            await s.commit()
    finally:
        await engine.dispose()


@pytest.fixture
def settings(db_url: str) -> Settings:
    return load_settings({"MIRRORHUB_DATABASE_URL": db_url})


async def test_scrape_shows_redirects_index_and_mirror_facts(settings: Settings) -> None:
    await seed(settings)
    app = create_app(settings)
    async with running(app), client(app, "192.0.2.7") as c, client(app, "127.0.0.1") as local:
        assert (await c.get("/pub/x.iso")).status_code == 302
        assert (await c.get("/pub/x.iso")).status_code == 302
        assert (await c.get("/pub/missing.iso")).status_code == 404
        assert (await c.get("/pub/%00")).status_code == 400
        r = await local.get("/-/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    m = parse(r.text)
    assert value(m, "mirrorhub_redirects_total", outcome="mirror") == 2
    assert value(m, "mirrorhub_redirects_total", outcome="not_found") == 1
    assert value(m, "mirrorhub_redirects_total", outcome="bad_request") == 1
    assert value(m, "mirrorhub_mirror_redirects_total", mirror="de1") == 2
    assert value(m, "mirrorhub_redirect_duration_seconds_count", outcome="mirror") == 2
    assert value(m, "mirrorhub_index_files") == 1
    assert value(m, "mirrorhub_index_mirrors") == 1
    age = value(m, "mirrorhub_index_age_seconds")
    assert age is not None and 0 <= age < 60
    assert value(m, "mirrorhub_index_full_builds_total") == 1  # at start-up, nothing since
    assert value(m, "mirrorhub_index_updates_total") == 0
    assert value(m, "mirrorhub_metrics_database_ok") == 1
    # Facts from the database: the latest scan and probe, not the older ones.
    assert value(m, "mirrorhub_mirror_health", mirror="de1", state="up") == 1
    assert value(m, "mirrorhub_mirror_health", mirror="de1", state="down") == 0
    assert value(m, "mirrorhub_mirror_scan_duration_seconds", mirror="de1") == 2
    assert value(m, "mirrorhub_mirror_scan_ok", mirror="de1") == 1
    assert value(m, "mirrorhub_mirror_scan_consecutive_failures", mirror="de1") == 2
    assert value(m, "mirrorhub_mirror_probe_ok", mirror="de1", scheme="http") == 1
    assert value(m, "mirrorhub_mirror_probe_latency_seconds", mirror="de1", scheme="http") == 0.02
    assert value(m, "mirrorhub_mirror_enabled", mirror="de1") == 1


async def test_access_is_limited_to_configured_addresses(db_url: str) -> None:
    env = {"MIRRORHUB_DATABASE_URL": db_url, "MIRRORHUB_TRUSTED_PROXIES": "127.0.0.1"}
    app = create_app(load_settings(env))
    async with running(app):
        for peer, headers, status in (
            ("127.0.0.1", {}, 200),
            ("::1", {}, 200),
            ("192.0.2.7", {}, 403),
            # An untrusted peer cannot claim to be local.
            ("192.0.2.7", {"x-forwarded-for": "127.0.0.1"}, 403),
            # Behind the trusted local proxy, the real client counts.
            ("127.0.0.1", {"x-forwarded-for": "192.0.2.7"}, 403),
        ):
            async with client(app, peer) as c:
                r = await c.get("/-/metrics", headers=headers)
            assert r.status_code == status, (peer, headers)
            if status == 403:
                assert r.json()["error"]
    env["MIRRORHUB_METRICS_ALLOW"] = "192.0.2.0/24"
    app = create_app(load_settings(env))
    async with running(app), client(app, "192.0.2.7") as c:
        assert (await c.get("/-/metrics")).status_code == 200
    async with running(app), client(app, "127.0.0.1") as c:
        assert (await c.get("/-/metrics")).status_code == 403


async def test_a_database_outage_still_serves_in_memory_metrics(tmp_path: Any) -> None:
    settings = load_settings({"MIRRORHUB_DATABASE_URL": f"sqlite:///{tmp_path}/missing/dir/x.db"})
    app = create_app(settings)
    async with running(app), client(app, "127.0.0.1") as c:
        r = await c.get("/-/metrics")
    assert r.status_code == 200
    m = parse(r.text)
    assert value(m, "mirrorhub_metrics_database_ok") == 0
    assert value(m, "mirrorhub_index_database_ok") == 0
    assert value(m, "mirrorhub_redirects_total", outcome="mirror") == 0
