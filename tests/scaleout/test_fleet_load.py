"""Two dispatchers on one PostgreSQL hold a small mirror to its capacity for the whole fleet.

Three mirrors (nginx on loopback, scanned through the CLI): ``near`` in Berlin with a small
capacity, ``paris`` (the next-nearest, with room) and ``newyork`` (farther, with room). A
client in Berlin (GeoIP test database, through a trusted-proxy header) asks both
`mirrorhub serve` processes, half each, for files of known sizes at three times ``near``'s
capacity. The ``Location`` of every 302 says where the bytes went; replayed through a
:class:`~mirrorhub.load.LoadEstimator` with the dispatchers' window and step, the records give
the fleet-wide estimate of what each mirror got: the quantity the fleet is meant to keep
under ``HARD x capacity``.

Phase 1 (estimates combined through ``mirror_load``): the fleet's estimate for ``near`` must
stay under the bound the mechanism allows (docs/behaviour.md, "Fleet-wide capacity limit:
accuracy")::

    HARD x capacity
    + what the other dispatcher sent to near within the longest time it can go unseen,
      4 G - 2 S (S = load_sync_seconds; G = the longest gap between two publications,
      measured from the rows themselves, so a slow machine widens the bound honestly)
    + one file per client at a bucket edge (client-side timestamps are a round trip wide)

Phase 2 (control): the test renames ``mirror_load``; every exchange then fails and each
dispatcher holds ``near`` back on its own estimate alone (the "database away" path). Each
still keeps its own share under ``HARD x capacity``, but the fleet's estimate goes above the
phase-1 bound, towards ``2 x HARD x capacity``: the combining is what holds the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest

from mirrorhub.geodb import write_asn_db, write_city_db
from mirrorhub.load import HARD, LoadEstimator
from mirrorhub.web.loadsync import ESTIMATE_STEP, STALE_AFTER
from tests.scaleout.procs import base_env, cli_batch, mirrorhub_process, query, wait_until
from tests.servers import free_port, make_tree, nginx_autoindex, wait_for_port

T0 = 1_700_000_000
WINDOW = 8.0  # MIRRORHUB_LOAD_WINDOW_SECONDS
SYNC = 0.5  # MIRRORHUB_LOAD_SYNC_SECONDS
CAPACITY = 4  # Mbit/s: near's declared capacity
DEMAND = 3.0  # the client's demand, in multiples of near's capacity (half per dispatcher)
SIZES = (20_000, 30_000, 40_000, 50_000, 60_000)  # bytes; each at most 1.5 % of near's C
FILES = {f"pub/f{i}.iso": (size, T0) for i, size in enumerate(SIZES)}
RATE = DEMAND * CAPACITY * 1e6 / 8 / (sum(SIZES) / len(SIZES))  # requests/s, whole fleet
PHASE1 = 2 * WINDOW  # combined: fill, hold, and the first burst leaving the window
PHASE2 = 6.0  # control: long enough for each dispatcher alone to fill near well past C
BERLIN, NEW_YORK = "192.0.2.10", "203.0.113.10"  # client addresses (RFC 5737)
MIRRORS = {  # name: (country, lat, lon, capacity, loopback address)
    "near": ("DE", "52.52", "13.40", CAPACITY, "127.0.0.2"),
    "paris": ("FR", "48.86", "2.35", 100, "127.0.0.3"),
    "newyork": ("US", "40.71", "-74.01", 100, "127.0.0.4"),
}


def mbps(nbytes: float) -> float:
    """What ``nbytes`` add to a window estimate (LoadEstimator's definition)."""
    return nbytes * 8 / 1e6 / WINDOW


@dataclass(frozen=True)
class Sent:
    t0: float  # time.monotonic() before the request: CLOCK_MONOTONIC, the dispatchers'
    # estimator clock too, so the replay below cuts the same 1-s buckets they do
    t1: float  # ... and after the answer: the dispatcher recorded it in between
    via: int  # which dispatcher
    mirror: str
    size: int


async def drive(
    client: httpx.AsyncClient,
    via: int,
    rate: float,
    stop_at: float,
    bases: dict[str, str],
    out: list[Sent],
) -> None:
    """Paced requests from the Berlin client; never catches up in a burst after a stall."""
    files = sorted(FILES.items())
    period = 1 / rate
    k = via * 2  # the two clients walk the sizes out of step
    due = time.monotonic()
    while (now := time.monotonic()) < stop_at:
        if due > now:
            await asyncio.sleep(due - now)
        path, (size, _) = files[k % len(files)]
        k += 1
        t0 = time.monotonic()
        r = await client.get("/" + path, headers={"x-forwarded-for": BERLIN})
        t1 = time.monotonic()
        assert r.status_code == 302, (r.status_code, r.text)
        (mirror,) = [m for m, base in bases.items() if r.headers["location"] == base + path]
        out.append(Sent(t0, t1, via, mirror, size))
        due = max(due + period, t1)


async def watch_publications(
    db_url: str, stop: asyncio.Event, seen: dict[str, list[float]]
) -> None:
    """Every publication (``updated_at``) of every dispatcher, polled at 20 Hz.

    A poll missed under load only makes a gap look longer: the bound gets looser, never wrong.
    """
    conn = await asyncpg.connect(db_url)
    try:
        while not stop.is_set():
            rows = await conn.fetch(
                "SELECT process, max(updated_at) AS at FROM mirror_load GROUP BY process"
            )
            for row in rows:
                times = seen.setdefault(row["process"], [])
                if not times or row["at"] != times[-1]:
                    times.append(row["at"])
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


def replay(sent: Sequence[Sent], times: Sequence[float]) -> list[dict[str, float]]:
    """The fleet-wide estimate (Mbit/s per mirror) at each of ``times`` (ascending): every
    redirect fed, at its answer time, into one LoadEstimator with the dispatchers' window
    and step."""
    now = [0.0]
    est = LoadEstimator(window=WINDOW, step=ESTIMATE_STEP, clock=lambda: now[0])
    order = sorted(sent, key=lambda s: s.t1)
    out: list[dict[str, float]] = []
    i = 0
    for t in times:
        while i < len(order) and order[i].t1 <= t:
            now[0] = order[i].t1
            est.add(order[i].mirror, order[i].size)
            i += 1
        now[0] = t
        out.append(est.mbps())
    return out


def max_in_any(sent: Sequence[Sent], span: float) -> float:
    """The most bytes among ``sent`` in any ``span`` seconds: a request counts wherever its
    send-to-answer interval overlaps the span, since the dispatcher recorded it in there."""
    ends = {s.t0 for s in sent} | {s.t1 for s in sent}  # where the sum can change
    return max(
        (sum(s.size for s in sent if s.t1 > end - span and s.t0 <= end) for end in ends),
        default=0,
    )


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_two_dispatchers_hold_a_small_mirror_fleet_wide(db_url: str, tmp_path: Path) -> None:
    origin = make_tree(tmp_path / "origin", FILES)
    geo = tmp_path / "geo"
    geo.mkdir()
    write_city_db(
        geo / "city.mmdb",
        [("192.0.2.0/24", "DE", "EU", 52.52, 13.40), ("203.0.113.0/24", "US", "NA", 40.71, -74.01)],
    )
    write_asn_db(geo / "asn.mmdb", [("192.0.2.0/24", 64500, "Example")])
    env = base_env(
        db_url,
        origin_dir=str(origin),
        trace_file="",
        min_redirect_size="0",
        geoip_city_db=str(geo / "city.mmdb"),
        geoip_asn_db=str(geo / "asn.mmdb"),
        trusted_proxies="127.0.0.1",
        load_window_seconds=str(WINDOW),
        load_sync_seconds=str(SYNC),
        stats_enabled="false",
    )
    setup = time.monotonic()
    with contextlib.ExitStack() as stack:
        bases: dict[str, str] = {}
        commands = [["scan-origin"]]
        for name, (cc, lat, lon, capacity, address) in MIRRORS.items():
            tree = make_tree(tmp_path / name, FILES)
            bases[name] = stack.enter_context(
                nginx_autoindex(tree, address, workdir=tmp_path / f"nginx-{name}")
            )
            commands.append(["mirror", "add", name, "--http", bases[name], "--country", cc,
                             "--lat", lat, "--lon", lon, "--capacity", str(capacity)])  # fmt: skip
        commands.append(["scan", "--all"])
        cli_batch(env, *commands)
        ports = [free_port("127.0.0.1") for _ in range(2)]
        procs = [
            stack.enter_context(
                mirrorhub_process(
                    ["serve", "--no-workers", "--no-upgrade", "--port", str(port)],
                    env,
                    tmp_path / f"serve{n}.log",
                )
            )
            for n, port in enumerate(ports, 1)
        ]
        for port, proc in zip(ports, procs, strict=True):  # both start at once
            wait_for_port("127.0.0.1", port, proc, timeout=30)
        urls = [f"http://127.0.0.1:{port}" for port in ports]
        # Ready: both answer from the index, and both publish their estimates (a few
        # requests from New York, which do not touch near).
        for url in urls:
            with httpx.Client(base_url=url, timeout=10) as c:
                wait_until(
                    lambda c=c: (
                        c.get("/pub/f0.iso", headers={"x-forwarded-for": NEW_YORK}).headers.get(
                            "location"
                        )
                        == bases["newyork"] + "pub/f0.iso"
                    ),
                    20,
                    f"{url} redirecting",
                )
        wait_until(
            lambda: query(db_url, "SELECT count(DISTINCT process) FROM mirror_load")[0][0] == 2,
            10,
            "both dispatchers publishing",
        )
        print(f"\nset-up: {time.monotonic() - setup:.1f} s")
        try:
            sent, renamed, seen = asyncio.run(run_load(db_url, urls, bases))
        finally:
            with contextlib.suppress(Exception):
                query(db_url, "ALTER TABLE mirror_load_off RENAME TO mirror_load")
    check(sent, renamed, seen)


async def run_load(
    db_url: str, urls: list[str], bases: dict[str, str]
) -> tuple[list[Sent], float, dict[str, list[float]]]:
    """Phase 1 (combined), then phase 2 (mirror_load renamed): the redirects, the time of
    the rename and each dispatcher's publication times in phase 1 (wall clock)."""
    sent: list[Sent] = []
    seen: dict[str, list[float]] = {}
    stop_watch = asyncio.Event()
    watcher = asyncio.create_task(watch_publications(db_url, stop_watch, seen))
    for url in urls:  # keep both publishing (a row needs traffic in the window)
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            await c.get("/pub/f0.iso", headers={"x-forwarded-for": NEW_YORK})
    await asyncio.sleep(3 * SYNC)  # a few publications before the load
    start, start_wall = time.monotonic(), time.time()
    stop_at = start + PHASE1 + PHASE2
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            await stack.enter_async_context(httpx.AsyncClient(base_url=url, timeout=10))
            for url in urls
        ]
        drivers = [
            asyncio.create_task(drive(c, via, RATE / 2, stop_at, bases, sent))
            for via, c in enumerate(clients)
        ]
        await asyncio.sleep(start + PHASE1 - time.monotonic())
        stop_watch.set()
        await watcher
        conn = await asyncpg.connect(db_url)
        try:
            await conn.execute("ALTER TABLE mirror_load RENAME TO mirror_load_off")
        finally:
            await conn.close()
        renamed, renamed_wall = time.monotonic(), time.time()
        await asyncio.gather(*drivers)
    # From the last publication before the load to the rename: earlier gaps do not matter,
    # and one still due at the rename has been at least that long.
    during = {p: [t for t in ts if t > start_wall] for p, ts in seen.items()}
    for p, ts in seen.items():
        during[p][:0] = [t for t in ts if t <= start_wall][-1:]
        during[p].append(renamed_wall)
    return sent, renamed, during


def check(sent: list[Sent], renamed: float, seen: dict[str, list[float]]) -> None:
    start = min(s.t0 for s in sent)
    end = max(s.t1 for s in sent)
    phase1 = [s for s in sent if s.t1 <= renamed]
    phase2 = [s for s in sent if s.t0 > renamed]
    assert len(seen) == 2, seen  # both dispatchers published (and nobody else)

    # How late can one dispatcher see the other's traffic? Measured from the publications.
    gaps = [b - a for times in seen.values() for a, b in itertools.pairwise(times)]
    gap = max(gaps)
    # A row read is at most 2 G - S old: below the cut-off, so none was ignored as stale.
    assert 2 * gap - SYNC < STALE_AFTER * SYNC, f"a sync took {gap:.2f} s: rows went stale"
    unseen_for = 4 * gap - 2 * SYNC
    to_near = [[s for s in phase1 if s.mirror == "near" and s.via == v] for v in (0, 1)]
    unseen = max(mbps(max_in_any(to_near[v], unseen_for)) for v in (0, 1))
    slack = mbps(2 * max(SIZES))  # one request per client straddling a bucket edge
    bound = HARD * CAPACITY + unseen + slack

    # The fleet's estimate peaks right after a redirect: look there, and every 0.1 s.
    grid = [start + k * 0.1 for k in range(int((end - start) / 0.1) + 1)]
    times = sorted({s.t1 for s in sent} | set(grid))
    fleet = replay(sent, times)
    per = [replay([s for s in sent if s.via == v], times) for v in (0, 1)]
    near1 = [e.get("near", 0.0) for t, e in zip(times, fleet, strict=True) if t <= renamed]
    near2 = [e.get("near", 0.0) for t, e in zip(times, fleet, strict=True) if t > renamed]
    own2 = max(p[k].get("near", 0.0) for p in per for k, t in enumerate(times) if t > renamed)
    # What a mirror sees over an exact window (not in whole-second buckets) can exceed the
    # estimate by the traffic of one bucket leaving early.
    exact = max(
        mbps(sum(s.size for s in phase1 if s.mirror == "near" and t - WINDOW < s.t1 <= t))
        for t in times
        if t <= renamed
    )
    step_burst = mbps(max_in_any([s for s in phase1 if s.mirror == "near"], ESTIMATE_STEP))
    held = [
        e.get("near", 0.0)
        for t, e in zip(times, fleet, strict=True)
        if start + WINDOW < t <= renamed
    ]
    offered = mbps(sum(s.size for s in phase1)) * WINDOW / (renamed - start)
    share = {m: sum(s.size for s in phase1 if s.mirror == m) for m in MIRRORS}
    spill = share["paris"] + share["newyork"]
    print(
        f"\n{len(sent)} redirects ({len(phase1)} combined, {len(phase2)} control); demand "
        f"{offered:.2f} Mbit/s = {offered / CAPACITY:.2f} x near's {CAPACITY} Mbit/s\n"
        f"publication gap: max {gap:.3f} s (sync {SYNC} s) -> unseen for {unseen_for:.2f} s "
        f"= {unseen:.3f} Mbit/s\n"
        f"combined: fleet estimate for near max {max(near1):.3f} Mbit/s "
        f"({max(near1) / CAPACITY:.1%}), mean after one window {sum(held) / len(held):.3f} "
        f"({sum(held) / len(held) / CAPACITY:.1%}); bound {bound:.3f} ({bound / CAPACITY:.1%})\n"
        f"combined, exact {WINDOW:.0f} s window: max {exact:.3f} ({exact / CAPACITY:.1%}), "
        f"bound {bound + step_burst:.3f} ({(bound + step_burst) / CAPACITY:.1%})\n"
        f"spill: paris {share['paris'] / spill:.1%}, newyork {share['newyork'] / spill:.1%}\n"
        f"control (own estimate only): fleet max {max(near2):.3f} ({max(near2) / CAPACITY:.1%}),"
        f" one dispatcher max {own2:.3f} ({own2 / CAPACITY:.1%})"
    )

    # The test means something only if each dispatcher's half of the demand would fill near
    # on its own: then counting only its own traffic lets the fleet reach 2 x HARD x C.
    assert offered / 2 > CAPACITY, offered
    assert bound < 2 * HARD * CAPACITY, bound
    # Combined: the fleet stays within the mechanism's bound, from the first request on.
    assert max(near1) <= bound
    assert exact <= bound + step_burst
    # Spill-over went to the mirrors with room, the next-nearest first (weights 1 : 1/2),
    # and neither of them came near being held back.
    assert share["paris"] > 0.5 * spill and share["newyork"] > 0
    for m in ("paris", "newyork"):
        assert max(e.get(m, 0.0) for e in fleet) < 0.5 * MIRRORS[m][3]
    # Control: on its own estimate each dispatcher still stops at HARD x C, but the fleet
    # goes well past the combined bound.
    assert own2 <= HARD * CAPACITY + slack / 2
    assert max(near2) > bound
