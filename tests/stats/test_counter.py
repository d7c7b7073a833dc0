"""The hot-path counter: what counts, range dedup, its bounds, day roll-over, index swaps."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
from pathlib import Path
from typing import Any

import httpx
import pytest

from mirrorhub.domain import Health, Mirror, MirrorState, Outcome
from mirrorhub.geo import GeoLocator
from mirrorhub.index import IndexConfig, IndexHolder, IndexSource, build_index
from mirrorhub.selection import Band
from mirrorhub.settings import Settings
from mirrorhub.stats.counter import DAY_SECONDS, StatsCounter
from mirrorhub.stats.flush import StatsFlusher
from mirrorhub.web.origin import OriginServer
from mirrorhub.web.redirect import Dispatcher
from mirrorhub.web.views import Views
from tests.geo_helpers import build_asn, build_city

UP = MirrorState(Health.UP, last_good_scan=1000.0)
MIRRORS = [
    Mirror(1, "de1", "http://de1.example/pub/", None, country="DE", continent="EU",
           latitude=52.5, longitude=13.4),
]  # fmt: skip
FILES = [
    (1, "pub/x.iso", 10_000, 1, None, 10.0),
    (2, "pub/y.iso", 20_000, 1, None, 10.0),
    (3, "small.txt", 5, 1, None, 10.0),
]
T0 = 1_750_000_000.0  # 2025-06-15 15:06:40 UTC


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(tmp_path: Path, clock: Clock, **kw: Any) -> tuple[Dispatcher, StatsCounter]:
    origin = tmp_path / "origin"
    origin.mkdir(exist_ok=True)
    (origin / "small.txt").write_bytes(b"tiny\n")
    settings = dataclasses.replace(
        Settings(), origin_dir=origin, min_redirect_size=100,
        trusted_proxies=(ipaddress.ip_network("127.0.0.1/32"),),
    )  # fmt: skip
    config = IndexConfig(Band(1.5, 500), 4, 100, settings.origin_only_patterns)
    holder = IndexHolder(build_index(IndexSource(1, [(m, UP) for m in MIRRORS], FILES, []), config))
    geo = GeoLocator(build_city(tmp_path / "city.mmdb"), build_asn(tmp_path / "asn.mmdb"))
    counter = StatsCounter(holder, clock=clock, **kw)
    app = Dispatcher(
        settings, holder, geo, _Inner(), OriginServer(settings), random.Random(1), Views(),
        clock, recorder=counter,
    )  # fmt: skip
    return app, counter


class _Inner:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("no /-/ requests here")


def client(app: Dispatcher) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://dl.example")


def totals(counter: StatsCounter) -> dict[str, dict[str, list[int]]]:
    out: dict[str, dict[str, list[int]]] = {"files": {}, "mirrors": {}, "countries": {}}
    for day in counter.swap():
        for name in out:
            for key, (n, b) in getattr(day, name).items():
                have = out[name].setdefault(key, [0, 0])
                have[0] += n
                have[1] += b
    return out


BERLIN = {"x-forwarded-for": "192.0.2.10"}  # DE in tests.geo_helpers


async def test_a_download_is_counted_per_file_mirror_and_country(tmp_path: Path) -> None:
    app, counter = make(tmp_path, Clock())
    async with client(app) as c:
        assert (await c.get("/pub/x.iso", headers=BERLIN)).status_code == 302
        assert (await c.get("/pub/y.iso", headers=BERLIN)).status_code == 302
        assert (await c.get("/small.txt", headers=BERLIN)).status_code == 200  # origin
    t = totals(counter)
    assert t["files"] == {"pub/x.iso": [1, 10_000], "pub/y.iso": [1, 20_000], "small.txt": [1, 5]}
    assert t["mirrors"] == {"de1": [2, 30_000], "": [1, 5]}
    assert t["countries"] == {"DE": [3, 30_005]}


async def test_head_views_errors_and_unknown_paths_are_not_counted(tmp_path: Path) -> None:
    app, counter = make(tmp_path, Clock())
    async with client(app) as c:
        assert (await c.head("/pub/x.iso", headers=BERLIN)).status_code == 302
        assert (await c.get("/pub/x.iso?json", headers=BERLIN)).status_code == 200
        assert (await c.get("/pub/missing.iso", headers=BERLIN)).status_code == 404
        assert (await c.get("/pub//x.iso", headers=BERLIN)).status_code == 400
        assert (await c.post("/pub/x.iso", headers=BERLIN)).status_code == 405
    assert counter.swap() == []
    assert counter.counted == 0


async def test_a_burst_of_ranged_requests_counts_once(tmp_path: Path) -> None:
    clock = Clock()
    app, counter = make(tmp_path, clock, range_window=600.0)
    async with client(app) as c:
        # A download manager: a first GET, then segments in parallel, then a resume later.
        await c.get("/pub/x.iso", headers=BERLIN)
        for start in range(0, 10_000, 1000):
            clock.now += 1
            await c.get("/pub/x.iso", headers={**BERLIN, "range": f"bytes={start}-"})
        clock.now += 500  # within the window of the last segment: the window slides
        await c.get("/pub/x.iso", headers={**BERLIN, "range": "bytes=9000-"})
        # Another client, and the same client for another file, count on their own.
        await c.get("/pub/x.iso", headers={"x-forwarded-for": "198.51.100.10", "range": "bytes=0-"})
        await c.get("/pub/y.iso", headers={**BERLIN, "range": "bytes=0-"})
    t = totals(counter)
    assert t["files"] == {"pub/x.iso": [2, 20_000], "pub/y.iso": [1, 20_000]}
    assert counter.deduplicated == 11


async def test_ranges_count_again_after_the_window_and_plain_gets_always(tmp_path: Path) -> None:
    clock = Clock()
    app, counter = make(tmp_path, clock, range_window=600.0)
    async with client(app) as c:
        await c.get("/pub/x.iso", headers={**BERLIN, "range": "bytes=0-"})
        await c.get("/pub/x.iso", headers=BERLIN)  # a plain GET is a new full download
        clock.now += 601
        await c.get("/pub/x.iso", headers={**BERLIN, "range": "bytes=0-"})
    assert totals(counter)["files"] == {"pub/x.iso": [3, 30_000]}


async def test_zero_window_counts_every_request(tmp_path: Path) -> None:
    app, counter = make(tmp_path, Clock(), range_window=0.0)
    async with client(app) as c:
        for _ in range(3):
            await c.get("/pub/x.iso", headers={**BERLIN, "range": "bytes=0-"})
    assert totals(counter)["files"] == {"pub/x.iso": [3, 30_000]}


async def test_dedup_state_stays_bounded_and_keeps_the_latest_half(tmp_path: Path) -> None:
    clock = Clock()
    app, counter = make(tmp_path, clock, max_clients=50, range_window=600.0)

    def ip(i: int) -> dict[str, str]:
        return {"x-forwarded-for": f"10.0.{i // 250}.{i % 250}"}

    async with client(app) as c:
        for i in range(213):
            await c.get("/pub/x.iso", headers=ip(i))
            assert counter.remembered <= 50
        assert counter.remembered > 25
        clock.now += 1
        # The last 25 clients (half the bound) are remembered: their resumes count once.
        for i in range(213 - 25, 213):
            await c.get("/pub/x.iso", headers={**ip(i), "range": "bytes=5-"})
        assert counter.deduplicated == 25
        clock.now += 599  # the resumes were seen 599 s ago, the rest 600 s ago
        before = counter.remembered
        assert counter.expire() == before - counter.remembered
        assert counter.remembered >= 25  # the resumed pairs stay
        clock.now += 2
        remembered = counter.remembered
        assert counter.expire() == remembered and counter.remembered == 0


async def test_expire_keeps_a_generation_with_recent_pairs(tmp_path: Path) -> None:
    clock = Clock()
    app, counter = make(tmp_path, clock, max_clients=50, range_window=600.0)
    async with client(app) as c:
        await c.get("/pub/x.iso", headers={"x-forwarded-for": "10.0.0.1"})
        clock.now += 590
        await c.get("/pub/x.iso", headers={"x-forwarded-for": "10.0.0.2"})
        clock.now += 20  # the first pair is 610 s old, the second 20 s
        assert counter.expire() == 0 and counter.remembered == 2
        # the old pair no longer deduplicates, the recent one does
        await c.get("/pub/x.iso", headers={"x-forwarded-for": "10.0.0.1", "range": "bytes=5-"})
        await c.get("/pub/x.iso", headers={"x-forwarded-for": "10.0.0.2", "range": "bytes=5-"})
    assert counter.deduplicated == 1


async def test_days_roll_over_at_utc_midnight(tmp_path: Path) -> None:
    clock = Clock(T0 // DAY_SECONDS * DAY_SECONDS + DAY_SECONDS - 1)  # 23:59:59
    app, counter = make(tmp_path, clock)
    async with client(app) as c:
        await c.get("/pub/x.iso", headers=BERLIN)
        clock.now += 2
        await c.get("/pub/y.iso", headers=BERLIN)
        await c.get("/pub/y.iso", headers=BERLIN)
    days = counter.swap()
    first = int(T0 // DAY_SECONDS)
    assert [(d.day, d.files) for d in days] == [
        (first, {"pub/x.iso": [1, 10_000]}),
        (first + 1, {"pub/y.iso": [2, 40_000]}),
    ]
    assert counter.swap() == []


async def test_requests_in_flight_during_an_index_swap_use_their_own_snapshot(
    tmp_path: Path,
) -> None:
    app, counter = make(tmp_path, Clock())
    async with client(app) as c:
        await c.get("/pub/x.iso", headers=BERLIN)
    old = app.holder.current
    config = old.config
    # The new snapshot puts other files at the old positions.
    files = [(0, "pub/new.iso", 7_000, 1, None, 10.0), *FILES]  # id 0 comes first
    app.holder.current = build_index(IndexSource(2, [(m, UP) for m in MIRRORS], files, []), config)
    ctx_old = app.context({"client": ("127.0.0.1", 1), "headers": [], "scheme": "http"}, old)[0]
    ctx_new = app.context(
        {"client": ("127.0.0.1", 1), "headers": [], "scheme": "http"}, app.holder.current
    )[0]
    scope = {"method": "GET", "headers": []}
    counter.record(Outcome.MIRROR, "de1", 0, ctx_new, scope, 0.0)
    counter.record(Outcome.MIRROR, "de1", 0, ctx_old, scope, 0.0)  # finished after the swap
    assert totals(counter)["files"] == {"pub/x.iso": [2, 20_000], "pub/new.iso": [1, 7_000]}
    assert counter.lost == 0


class _Holder:
    current = None


def test_record_never_raises() -> None:
    counter = StatsCounter(_Holder())  # type: ignore[arg-type]
    counter.record(Outcome.MIRROR, "m", 0, object(), {}, 0.0)  # type: ignore[arg-type]
    assert counter.errors == 1


@pytest.mark.parametrize("outcome", [Outcome.NOT_FOUND, Outcome.BAD_REQUEST])
def test_only_answers_with_a_file_count(outcome: Outcome) -> None:
    counter = StatsCounter(_Holder())  # type: ignore[arg-type]
    counter.record(outcome, None, None, None, {"method": "GET"}, 0.0)
    assert counter.errors == 0 and counter.counted == 0


def test_files_removed_in_place_before_the_swap_still_add_up() -> None:
    """A file removed from the live index leaves "" at its position: counts at several such
    positions all belong to that key and must be added, not overwrite each other."""
    config = IndexConfig(Band(1.5, 500), 4, 100, ())
    holder = IndexHolder(build_index(IndexSource(1, [(m, UP) for m in MIRRORS], FILES, []), config))
    counter = StatsCounter(holder, clock=Clock())
    index = holder.current
    x, y, small = (index.positions[p] for p in ("pub/x.iso", "pub/y.iso", "small.txt"))
    for pos, times in ((x, 2), (y, 3), (small, 1)):
        for _ in range(times):
            counter.count(pos, "de1", "DE", index.sizes[pos])
    index.drop_file(1)
    index.drop_file(2)
    (day,) = counter.swap()
    assert day.files == {"": [5, 2 * 10_000 + 3 * 20_000], "small.txt": [1, 5]}
    assert day.mirrors == {"de1": [6, 80_005]}


async def test_the_flusher_turns_positions_into_paths_a_step_at_a_time() -> None:
    """take() hands over the file counts by position; settle() makes the paths a few files
    per turn of the event loop, with what swap() makes at once, holes added up across
    steps and the counts of an earlier snapshot under that snapshot's paths."""
    files = [(f, f"pub/f{f:02}.iso", 1_000 * f, 1, None, 10.0) for f in range(1, 41)]
    config = IndexConfig(Band(1.5, 500), 4, 100, ())
    source = IndexSource(1, [(m, UP) for m in MIRRORS], files, [])
    holder = IndexHolder(build_index(source, config))
    counter = StatsCounter(holder, clock=Clock())
    first = holder.current
    for pos in range(40):
        for _ in range(pos % 3 + 1):
            counter.count(pos, "de1", "DE", first.sizes[pos])
    # A new snapshot with one more file in front: the old positions mean other files now.
    holder.current = build_index(
        IndexSource(2, source.mirrors, [(0, "pub/new.iso", 7, 1, None, 10.0), *files], []), config
    )
    counter._index = holder.current
    counter._switch_index(holder.current)
    counter.count(1, "de1", "DE", 1_000)  # pub/f01.iso at its new position
    for file_id in (3, 17, 33):  # removed in place: "" in three different steps
        first.drop_file(file_id)
    (day,) = counter.take()
    assert day.files == {} and len(day.positions) == 2
    expected: dict[str, list[int]] = {"": [0, 0]}
    for f in range(1, 41):
        n = (f - 1) % 3 + 1 + (f == 1)
        key = "" if f in (3, 17, 33) else f"pub/f{f:02}.iso"
        expected.setdefault(key, [0, 0])
        expected[key][0] += n
        expected[key][1] += n * 1_000 * f
    turns = 0

    async def tick() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    ticker = asyncio.create_task(tick())
    await day.settle(step=4)
    ticker.cancel()
    assert day.files == expected and day.positions == []
    assert turns >= 40 // 4


async def test_a_flush_cancelled_while_it_settles_keeps_every_count() -> None:
    """Cancelled at a turn of the loop between two steps (a shutdown), the flush keeps what
    it took in ``pending``, each download once: the steps already made are not made again."""
    files = [(f, f"pub/f{f:05}.iso", 100, 1, None, 10.0) for f in range(1, 10_001)]
    config = IndexConfig(Band(1.5, 500), 4, 0, ())
    holder = IndexHolder(build_index(IndexSource(1, [(m, UP) for m in MIRRORS], files, []), config))
    counter = StatsCounter(holder, clock=Clock())
    for pos in range(10_000):
        counter.count(pos, "de1", "DE", 100)
    flusher = StatsFlusher(counter, None)  # type: ignore[arg-type]  # cancelled before writing
    task = asyncio.create_task(flusher.flush())
    await asyncio.sleep(0)  # the flush takes the counts and makes its first step
    assert not task.done()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (day,) = {d for _, d in flusher.pending}
    tally = flusher.pending[("file", day)]
    assert len(tally) == 10_000 and all(c == [1, 100] for c in tally.values())
    assert flusher.pending_downloads == 10_000 and counter.take() == []


def test_one_replaced_snapshot_waits_for_the_flush_at_most() -> None:
    """A second index switch before the flush turns the first snapshot's positions into
    paths at once: no more than one replaced index is kept alive for its paths."""
    config = IndexConfig(Band(1.5, 500), 4, 100, ())
    source = IndexSource(1, [(m, UP) for m in MIRRORS], FILES, [])
    holder = IndexHolder(build_index(source, config))
    counter = StatsCounter(holder, clock=Clock())
    first = holder.current
    counter.count(first.positions["pub/x.iso"], "de1", "DE", 10_000)
    second = build_index(IndexSource(2, source.mirrors, source.files, []), config)
    counter._switch_index(second)
    counter.count(second.positions["pub/y.iso"], "de1", "DE", 20_000)
    assert [i for i, _ in counter._positions] == [first]
    third = build_index(IndexSource(3, source.mirrors, source.files, []), config)
    counter._switch_index(third)
    assert [i for i, _ in counter._positions] == [second]
    assert counter._files == {"pub/x.iso": [1, 10_000]}
    (day,) = counter.swap()
    assert day.files == {"pub/x.iso": [1, 10_000], "pub/y.iso": [1, 20_000]}
