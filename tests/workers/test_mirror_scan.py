"""Mirror scans end to end: real nginx, rsync daemon and listing servers on loopback, both databases.

The origin tree and the mirrors differ in known ways; the tests assert exact diffs, counts and
``mirror_state`` on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from mirrorhub.db.models import (
    MirrorFileConfirmationRow,
    MirrorFileDiffRow,
    MirrorRow,
    MirrorScanRow,
    MirrorStateRow,
    OriginFileRow,
)
from mirrorhub.errors import NotFound
from mirrorhub.settings import Settings
from mirrorhub.workers.mirror_scan import ScanReport, scan_mirror
from mirrorhub.workers.origin_scan import scan_origin
from mirrorhub.workers.scan_apply import DiffRow, ScanRecord, apply_scan
from tests.servers import (
    Reply,
    endless_route,
    listing_server,
    make_tree,
    nginx_autoindex,
    rsync_daemon,
    static_route,
    utc,
)

Sessions = async_sessionmaker[AsyncSession]
NOW = datetime(2024, 1, 1, tzinfo=UTC)


# --- database helpers -----------------------------------------------------------------------


async def add_mirror(sessions: Sessions, name: str, **columns: object) -> int:
    values: dict[str, object] = {
        "name": name,
        "http_url": f"http://{name}.example/",
        "created_at": NOW,
        "updated_at": NOW,
    }
    values.update(columns)
    async with sessions() as s, s.begin():
        row = MirrorRow(**values)
        s.add(row)
        await s.flush()
        return row.id


async def add_files(sessions: Sessions, count: int, changed_at: float = 100.0) -> list[int]:
    async with sessions() as s, s.begin():
        await s.execute(
            insert(OriginFileRow.__table__),
            [
                {"path": f"f/{i:06d}", "size": i, "mtime": 1000 + i, "changed_at": changed_at}
                for i in range(count)
            ],
        )
        ids = await s.scalars(select(OriginFileRow.id).order_by(OriginFileRow.path))
        return list(ids)


async def version(sessions: Sessions) -> int:
    async with sessions() as s:
        return int((await s.execute(text("SELECT version FROM index_version"))).scalar_one())


async def state(sessions: Sessions, mirror_id: int) -> MirrorStateRow:
    async with sessions() as s:
        row = await s.get(MirrorStateRow, mirror_id)
        assert row is not None
        return row


async def diffs(sessions: Sessions, mirror_id: int) -> set[tuple[int, str, int | None]]:
    t = MirrorFileDiffRow
    async with sessions() as s:
        rows = await s.execute(
            select(t.file_id, t.kind, t.seen_size).where(t.mirror_id == mirror_id)
        )
        return {(r[0], r[1], r[2]) for r in rows}


async def scans(sessions: Sessions, mirror_id: int) -> list[MirrorScanRow]:
    async with sessions() as s:
        rows = await s.scalars(
            select(MirrorScanRow)
            .where(MirrorScanRow.mirror_id == mirror_id)
            .order_by(MirrorScanRow.id)
        )
        return list(rows)


def good(mirror_id: int, started: float, **kw: object) -> ScanRecord:
    return ScanRecord(mirror_id, "http", started, 1.5, True, **kw)  # type: ignore[arg-type]


def bad(mirror_id: int, started: float, error: str = "timeout: x") -> ScanRecord:
    return ScanRecord(mirror_id, "rsync", started, 0.5, False, error=error)


# --- scan_apply ------------------------------------------------------------------------------


async def test_good_scan_replaces_diffs_and_state(sessions: Sessions) -> None:
    mid = await add_mirror(sessions, "m1")
    other = await add_mirror(sessions, "m2")
    f = await add_files(sessions, 5)
    await apply_scan(sessions, good(other, 50.0), [DiffRow(f[0], "missing")])
    await apply_scan(
        sessions, good(mid, 100.0), [DiffRow(f[0], "missing"), DiffRow(f[1], "size", 7, 8)]
    )
    async with sessions() as s, s.begin():  # confirmations: one before, one after the next scan
        await s.execute(
            insert(MirrorFileConfirmationRow),
            [
                {"mirror_id": mid, "file_id": f[2], "checked_at": 150.0},
                {"mirror_id": mid, "file_id": f[3], "checked_at": 250.0},
                {"mirror_id": other, "file_id": f[2], "checked_at": 150.0},
            ],
        )
    before = await version(sessions)
    applied = await apply_scan(
        sessions,
        good(mid, 200.0, files_seen=4, files_matching=2, missing=1, outdated=1, tz_offset=-3600),
        [DiffRow(f[4], "missing"), DiffRow(f[1], "mtime", 1, 2)],
    )
    assert applied.diffs_written == 2 and applied.version_bumped
    assert await version(sessions) == before + 1
    assert await diffs(sessions, mid) == {(f[4], "missing", None), (f[1], "mtime", 1)}
    assert await diffs(sessions, other) == {(f[0], "missing", None)}  # untouched
    st = await state(sessions, mid)
    assert (st.last_good_scan, st.scan_failed, st.scan_failures, st.tz_offset) == (
        200.0,
        False,
        0,
        -3600,
    )
    async with sessions() as s:
        kept = await s.execute(
            select(MirrorFileConfirmationRow.mirror_id, MirrorFileConfirmationRow.file_id)
        )
        assert {(r[0], r[1]) for r in kept} == {(mid, f[3]), (other, f[2])}
    rows = await scans(sessions, mid)
    assert [(r.ok, r.method, r.files_seen, r.missing, r.outdated, r.tz_offset) for r in rows] == [
        (True, "http", 0, 0, 0, 0),
        (True, "http", 4, 1, 1, -3600),
    ]
    assert rows[-1].started_at.replace(tzinfo=UTC).timestamp() == 200.0


async def test_failures_keep_last_good_data_and_exclude_after_threshold(
    sessions: Sessions,
) -> None:
    mid = await add_mirror(sessions, "m1")
    f = await add_files(sessions, 3)
    await apply_scan(sessions, good(mid, 100.0), [DiffRow(f[0], "missing")])
    v0 = await version(sessions)
    results = [
        await apply_scan(
            sessions, bad(mid, 200.0 + i, f"timeout: {i}"), [DiffRow(f[1], "missing")],
            failures_before_exclusion=3,
        )
        for i in range(4)
    ]  # fmt: skip
    assert [(a.scan_failures, a.scan_failed, a.version_bumped) for a in results] == [
        (1, False, False),
        (2, False, False),
        (3, True, True),  # the third failure in a row excludes the mirror: one bump
        (4, True, False),
    ]
    assert await version(sessions) == v0 + 1
    assert await diffs(sessions, mid) == {(f[0], "missing", None)}  # last good diffs kept
    st = await state(sessions, mid)
    assert (st.last_good_scan, st.last_scan_error) == (100.0, "timeout: 3")
    rows = await scans(sessions, mid)
    assert [(r.ok, r.error) for r in rows[1:]] == [(False, f"timeout: {i}") for i in range(4)]
    # A good scan brings it back at once.
    applied = await apply_scan(sessions, good(mid, 300.0), [])
    assert (applied.scan_failures, applied.scan_failed, applied.version_bumped) == (0, False, True)
    st = await state(sessions, mid)
    assert (st.last_good_scan, st.last_scan_error, st.scan_failed) == (300.0, "", False)
    assert await diffs(sessions, mid) == set()


async def test_first_scan_failing_creates_state(sessions: Sessions) -> None:
    mid = await add_mirror(sessions, "m1")
    applied = await apply_scan(sessions, bad(mid, 10.0), failures_before_exclusion=1)
    assert applied.scan_failed and applied.version_bumped
    st = await state(sessions, mid)
    assert (st.last_good_scan, st.scan_failures, st.scan_failed) == (None, 1, True)


async def test_deleted_mirror_and_vanished_files(sessions: Sessions) -> None:
    mid = await add_mirror(sessions, "m1")
    f = await add_files(sessions, 3)
    with pytest.raises(NotFound):
        await apply_scan(sessions, good(mid + 100, 1.0), [])
    async with sessions() as s, s.begin():  # the origin scan deleted a file meanwhile
        await s.execute(text("DELETE FROM origin_files WHERE id = :id"), {"id": f[2]})
    await apply_scan(sessions, good(mid, 1.0), [DiffRow(f[1], "missing"), DiffRow(f[2], "size")])
    assert await diffs(sessions, mid) == {(f[1], "missing", None)}


async def test_large_diff_set_is_fast(sessions: Sessions) -> None:
    mid = await add_mirror(sessions, "m1")
    f = await add_files(sessions, 30_000)
    rows = [DiffRow(i, "missing") for i in f]
    t0 = time.perf_counter()
    await apply_scan(sessions, good(mid, 1.0), rows)
    await apply_scan(sessions, good(mid, 2.0), rows[::2])  # replaces 30,000 with 15,000
    elapsed = time.perf_counter() - t0
    async with sessions() as s:
        count = await s.scalar(
            text("SELECT count(*) FROM mirror_file_diffs WHERE mirror_id = :m"), {"m": mid}
        )
    assert count == 15_000
    assert elapsed < 10, f"applying 45,000 diff rows took {elapsed:.1f} s"


# --- end to end: real servers, both databases ---------------------------------------------------

T = utc("2024-01-02 03:04:05")
DAY = 86_400
ORIGIN = {
    "pub/a.iso": (1000, T),
    "pub/b.iso": (2000, T),
    "pub/iso/c.iso": (3000, T),
    "pub/iso/d.iso": (4000, T),
    "other/e.txt": (500, T),
}
# A mirror that lacks b.iso, holds a wrong c.iso and an old d.iso, and one file too many.
BEHIND = {
    "pub/a.iso": (1000, T),
    "pub/iso/c.iso": (3001, T),
    "pub/iso/d.iso": (4000, T - DAY),
    "pub/extra.bin": (10, T),
    "other/e.txt": (500, T),
}
SETTINGS = Settings(
    allow_private_mirrors=True,
    scan_timeout_seconds=5,
    scan_request_timeout_seconds=2,
    scan_max_pages=40,
)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def trees(tmp_path: Path) -> dict[str, Path]:
    return {
        "origin": make_tree(tmp_path / "origin", ORIGIN),
        "behind": make_tree(tmp_path / "behind", BEHIND),
        "same": make_tree(tmp_path / "same", ORIGIN),
    }


async def origin_ids(sessions: Sessions, origin: Path) -> dict[str, int]:
    await scan_origin(sessions, origin, clock=Clock(1000.0))
    async with sessions() as s:
        rows = await s.execute(select(OriginFileRow.path, OriginFileRow.id))
        return {r[0]: r[1] for r in rows}


async def named_diffs(
    sessions: Sessions, mirror_id: int, ids: dict[str, int]
) -> set[tuple[str, str]]:
    paths = {v: k for k, v in ids.items()}
    return {(paths[f], kind) for f, kind, _ in await diffs(sessions, mirror_id)}


def counts(r: ScanReport) -> tuple[bool, int, int, int, int, int]:
    return (r.ok, r.files_seen, r.matching, r.missing, r.outdated, r.extra)


EXPECTED_BEHIND = {("pub/b.iso", "missing"), ("pub/iso/c.iso", "size"), ("pub/iso/d.iso", "mtime")}


async def test_rsync_and_http_scans_find_the_same_differences(
    sessions: Sessions, trees: dict[str, Path], tmp_path: Path
) -> None:
    ids = await origin_ids(sessions, trees["origin"])
    with (
        rsync_daemon({"m": trees["behind"]}, "127.0.0.2", workdir=tmp_path / "rs") as rs,
        nginx_autoindex(trees["behind"], "127.0.0.3", workdir=tmp_path / "ngx") as ngx,
    ):
        m_rsync = await add_mirror(sessions, "rs", rsync_url=rs + "m/")
        m_http = await add_mirror(sessions, "ngx", http_url=ngx)
        m_scope = await add_mirror(sessions, "scoped", http_url=ngx, scope="pub/iso/")
        v0 = await version(sessions)
        r1 = await scan_mirror(sessions, SETTINGS, "rs", clock=Clock(2000.0))
        r2 = await scan_mirror(sessions, SETTINGS, "ngx", clock=Clock(2001.0))
        r3 = await scan_mirror(sessions, SETTINGS, "scoped", clock=Clock(2002.0))
    assert (r1.method, r2.method, r3.method) == ("rsync", "http", "http")
    assert counts(r1) == counts(r2) == (True, 5, 2, 1, 2, 1)
    assert counts(r3) == (True, 2, 0, 0, 2, 0)
    assert await named_diffs(sessions, m_rsync, ids) == EXPECTED_BEHIND
    assert await named_diffs(sessions, m_http, ids) == EXPECTED_BEHIND
    assert await named_diffs(sessions, m_scope, ids) == {
        ("pub/iso/c.iso", "size"),
        ("pub/iso/d.iso", "mtime"),
    }
    assert await diffs(sessions, m_rsync) >= {(ids["pub/iso/c.iso"], "size", 3001)}
    st = await state(sessions, m_rsync)
    assert (st.last_good_scan, st.scan_failed, st.scan_failures) == (2000.0, False, 0)
    assert await version(sessions) == v0 + 3


async def test_http_listing_in_local_time_is_detected(
    sessions: Sessions, trees: dict[str, Path], tmp_path: Path
) -> None:
    ids = await origin_ids(sessions, trees["origin"])
    with (
        nginx_autoindex(trees["same"], "127.0.0.4", workdir=tmp_path / "ngx", tz="Etc/GMT-1") as a,
        listing_server("127.0.0.5", root=trees["same"], shift=-2 * 3600) as b,
    ):
        ma = await add_mirror(sessions, "plus1", http_url=a)
        mb = await add_mirror(sessions, "minus2", http_url=b)
        ra = await scan_mirror(sessions, SETTINGS, "plus1", clock=Clock(2000.0))
        rb = await scan_mirror(sessions, SETTINGS, "minus2", clock=Clock(2000.0))
    assert counts(ra) == counts(rb) == (True, 5, 5, 0, 0, 0)
    assert (ra.tz_offset, rb.tz_offset) == (3600, -7200)  # how far ahead of UTC listings are
    assert await named_diffs(sessions, ma, ids) == set()
    assert await named_diffs(sessions, mb, ids) == set()
    assert (await state(sessions, ma)).tz_offset == 3600


def _truncated() -> Reply:
    return Reply(
        200,
        b"<html><head><title>Index of /</title></head><body><h1>Index of /</h1><hr><pre>"
        b'<a href="../">../</a>\n<a href="pub/">pub/</a>   02-Jan-2024 03:04   -\n'
        b'<a href="other/">other/</a>   02-Jan-20',
    )


@pytest.mark.parametrize(
    ("route", "reason"),
    [
        (static_route("/bad/", Reply(200, b"<html><body>Welcome!</body></html>")), "not a directory listing"),
        (static_route("/bad/", _truncated()), "truncated listing"),
        (endless_route("/bad/"), "(listing pages|deeper than|timeout)"),
        (static_route("/bad/", Reply(302, b"", {"Location": "http://127.0.0.9/"})), "redirect off the mirror"),
    ],
    ids=["garbage", "truncated", "endless", "redirect-off-mirror"],
)  # fmt: skip
async def test_failed_scan_keeps_last_good_data(
    sessions: Sessions, trees: dict[str, Path], route: object, reason: str
) -> None:
    ids = await origin_ids(sessions, trees["origin"])
    with listing_server("127.0.0.6", root=trees["behind"], routes=[route]) as url:  # type: ignore[list-item]
        mid = await add_mirror(sessions, "m", http_url=url)
        good_report = await scan_mirror(sessions, SETTINGS, "m", clock=Clock(2000.0))
        assert good_report.ok, good_report.error
        v = await version(sessions)
        async with sessions() as s, s.begin():
            row = await s.get(MirrorRow, mid)
            assert row is not None
            row.http_url = url + "bad/"
        report = await scan_mirror(sessions, SETTINGS, "m", clock=Clock(3000.0))
    assert not report.ok
    assert report.error and __import__("re").search(reason, report.error), report.error
    assert (report.scan_failures, report.scan_failed) == (1, False)
    assert await named_diffs(sessions, mid, ids) == EXPECTED_BEHIND  # kept
    st = await state(sessions, mid)
    assert (st.last_good_scan, st.scan_failures, st.last_scan_error) == (2000.0, 1, report.error)
    assert await version(sessions) == v  # nothing the dispatcher must see
    rows = await scans(sessions, mid)
    assert [(r.ok, r.error) for r in rows] == [(True, ""), (False, report.error)]


async def test_ssrf_guard_fails_the_scan(
    sessions: Sessions, trees: dict[str, Path], tmp_path: Path
) -> None:
    await origin_ids(sessions, trees["origin"])
    strict = Settings(allow_private_mirrors=False, scan_failures_before_exclusion=1)
    with nginx_autoindex(trees["same"], "127.0.0.7", workdir=tmp_path / "ngx") as url:
        await add_mirror(sessions, "h", http_url=url)
        report = await scan_mirror(sessions, strict, "h", clock=Clock(2000.0))
    assert not report.ok and report.error.startswith("address refused: 127.0.0.7 is a loopback")
    assert report.scan_failed  # threshold 1: excluded at once


async def test_unknown_mirror(sessions: Sessions) -> None:
    with pytest.raises(NotFound):
        await scan_mirror(sessions, SETTINGS, "nope")
