"""Capacity-aware distribution, simulated: static weights vs. load-aware, same demand.

    .venv/bin/python -m bench.capacity_sim [--seconds 900] [--seed 1]

A population of clients around the world asks for a mix of file sizes at a rate that rises
from 10 % to 100 % of the mirrors' total capacity. Each request runs mirrorhub's real
selection (rank_mirrors + choose) against 50 mirrors with different capacities. A mirror's
utilisation is the traffic sent to it over the last 60 s (the sizes of the files redirected
there, as the dispatcher estimates it) divided by its capacity. "static" picks by capacity
within the distance band; "aware" also feeds each redirect into a LoadEstimator and refreshes
the LoadView every 2 s, as a dispatcher does. No real bandwidth is used.

Writes bench/results/capacity_sim.json and bench/results/capacity_sim.svg.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import random
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mirrorhub.countries import centroid, continent_of
from mirrorhub.domain import Client, Health, Location, Mirror, MirrorState, Options, OriginFile
from mirrorhub.geo import distance_km
from mirrorhub.load import LoadEstimator, LoadView, make_view
from mirrorhub.selection import Band, FileFacts, Profile, choose, make_slot, rank_mirrors
from mirrorhub.web.charts import line_chart

RESULTS = Path(__file__).resolve().parent / "results"
# (country, share of clients)
POPULATION = [
    ("US", 16), ("DE", 8), ("FR", 5), ("GB", 5), ("BR", 6), ("IN", 10), ("CN", 8), ("JP", 5),
    ("RU", 4), ("AU", 2), ("CA", 3), ("IT", 3), ("ES", 3), ("PL", 2), ("NL", 2), ("SE", 1),
    ("ZA", 2), ("NG", 2), ("MX", 3), ("AR", 2), ("KR", 3), ("ID", 4), ("TR", 2), ("EG", 2),
]  # fmt: skip
TOTAL_CAPACITY = 400_000  # Mbit/s over all mirrors
MIRROR_COUNT = 50
SIZES = [(5e6, 0.5), (300e6, 0.35), (2e9, 0.15)]  # bytes, probability
# One file per size class: selection judges hold-back on the load *after* the file, so it
# must see the real size (as the dispatcher does: the index holds every file's size).
FILES = {
    size: FileFacts(OriginFile("pub/release.iso", int(size), 1, None, 1.0), None)
    for size, _ in SIZES
}
WINDOW = 60.0
SYNC = 2.0


def build_mirrors(rng: random.Random) -> list[Mirror]:
    """Mirrors where the clients are, each country's capacity in proportion to its clients,
    but unevenly split: a big population often sits next to one small mirror (the case
    static weights handle badly)."""
    weight = sum(w for _, w in POPULATION)
    counts = {cc: max(1, round(MIRROR_COUNT * w / weight)) for cc, w in POPULATION}
    mirrors: list[Mirror] = []
    for cc, w in POPULATION:
        lat, lon = centroid(cc) or (0.0, 0.0)
        splits = [rng.uniform(0.1, 1.0) for _ in range(counts[cc])]
        for split in splits:
            capacity = max(100, int(TOTAL_CAPACITY * w / weight * split / sum(splits)))
            n = len(mirrors) + 1
            mirrors.append(
                Mirror(
                    id=n,
                    name=f"{cc.lower()}{n}",
                    http_url=f"http://m{n}.example/",
                    https_url=None,
                    country=cc,
                    continent=continent_of(cc),
                    latitude=lat + rng.uniform(-3, 3),
                    longitude=lon + rng.uniform(-3, 3),
                    capacity=capacity,
                )
            )
    return mirrors


def client_locations(rng: random.Random, n: int) -> list[Location]:
    countries = [cc for cc, _ in POPULATION]
    weights = [w for _, w in POPULATION]
    out = []
    for cc in rng.choices(countries, weights, k=n):
        lat, lon = centroid(cc) or (0.0, 0.0)
        out.append(
            Location(cc, continent_of(cc), lat + rng.uniform(-4, 4), lon + rng.uniform(-4, 4))
        )
    return out


def simulate(aware: bool, seconds: int, seed: int) -> dict[str, object]:
    rng = random.Random(seed)
    mirrors = build_mirrors(random.Random(99))
    total_capacity = sum(m.capacity for m in mirrors)  # Mbit/s
    slots = [
        make_slot(i, m, MirrorState(Health.UP, last_good_scan=10.0), None)
        for i, m in enumerate(mirrors)
    ]
    clients = client_locations(random.Random(7), 2000)
    profiles: dict[int, Profile] = {}
    mean_size = sum(s * p for s, p in SIZES)
    clock = [0.0]
    estimator = LoadEstimator(window=WINDOW, step=1.0, clock=lambda: clock[0])
    caps = {m.name: m.capacity for m in mirrors}
    by_name = {m.name: m for m in mirrors}
    view: LoadView | None = None
    window: deque[tuple[float, str, float]] = deque()
    sent: dict[str, float] = {m.name: 0.0 for m in mirrors}
    timeline = []
    for t in range(seconds):
        clock[0] = float(t)
        demand = (0.1 + 0.9 * t / seconds) * total_capacity  # Mbit/s asked for
        rate = demand * 1e6 / 8 / mean_size  # requests per second
        n = int(rate) + (1 if rng.random() < rate - int(rate) else 0)
        distances = []
        for _ in range(n):
            c = rng.randrange(len(clients))
            profile = profiles.get(c)
            if profile is None:
                client = Client(ipaddress.ip_address("192.0.2.1"), clients[c])
                profile = profiles[c] = rank_mirrors(slots, client, Options(), frozenset())
            size = rng.choices([s for s, _ in SIZES], [p for _, p in SIZES])[0]
            d = choose(
                profile, FILES[size], "x", rng, band=Band(), alternates=0, full=False,
                client=Client(ipaddress.ip_address("192.0.2.1"), clients[c]), options=Options(),
                load=view if aware else None,
            )  # fmt: skip
            assert d.chosen is not None
            name = d.chosen.mirror.name
            estimator.add(name, int(size))
            if view is not None:
                view.add(name, int(size))
            window.append((t, name, size))
            sent[name] += size
            m = by_name[name]
            loc = clients[c]
            assert m.latitude is not None and m.longitude is not None
            assert loc.latitude is not None and loc.longitude is not None
            distances.append(distance_km(loc.latitude, loc.longitude, m.latitude, m.longitude))
        while window and window[0][0] <= t - WINDOW:
            _, name, size = window.popleft()
            sent[name] -= size
        util = {name: sent[name] * 8 / 1e6 / WINDOW / caps[name] for name in caps}
        if aware and t % int(SYNC) == 0:
            view = make_view(estimator.mbps(), {}, caps, window=WINDOW)
        timeline.append(
            {
                "t": t,
                "demand_share": demand / total_capacity,
                "max_util": max(util.values()),
                "over_100": sum(1 for u in util.values() if u > 1.0),
                "mean_distance_km": sum(distances) / len(distances) if distances else None,
            }
        )
    return {"timeline": timeline, "total_capacity_mbps": total_capacity}


def summarise(timeline: list[dict[str, float]], lo: float, hi: float) -> dict[str, float]:
    # Skip the first window: utilisation needs 60 s of history to mean anything.
    rows = [r for r in timeline if lo <= r["demand_share"] < hi and r["t"] >= WINDOW]
    dists = [r["mean_distance_km"] for r in rows if r["mean_distance_km"] is not None]
    return {
        "max_util": round(max((r["max_util"] for r in rows), default=0.0), 3),
        "seconds_with_a_mirror_over_100": sum(1 for r in rows if r["over_100"]),
        "mean_distance_km": round(sum(dists) / len(dists), 1) if dists else 0.0,
    }


def below_90(seed: int, seconds: int) -> dict[str, float]:
    """One seed's figures below 90 % demand: the capacity-aware run, distance vs static."""
    runs = {mode: simulate(mode == "aware", seconds, seed) for mode in ("static", "aware")}
    rows = {mode: summarise(run["timeline"], 0.0, 0.9) for mode, run in runs.items()}  # type: ignore[arg-type]
    ratio = rows["aware"]["mean_distance_km"] / rows["static"]["mean_distance_km"]
    return {"seed": seed, **rows["aware"], "distance_ratio": round(ratio, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=900)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--sweep",
        type=int,
        default=0,
        help="also run seeds 1..N (below-90 %% figures only; 2 processes) to see the spread",
    )
    args = parser.parse_args(argv)
    runs = {
        mode: simulate(mode == "aware", args.seconds, args.seed) for mode in ("static", "aware")
    }
    phases = [(0.0, 0.5), (0.5, 0.7), (0.7, 0.9), (0.9, 1.01)]
    table = {
        mode: {
            f"{lo:.0%}-{min(hi, 1):.0%}": summarise(run["timeline"], lo, hi) for lo, hi in phases
        }  # type: ignore[arg-type]
        for mode, run in runs.items()
    }
    below90 = {mode: summarise(run["timeline"], 0.0, 0.9) for mode, run in runs.items()}  # type: ignore[arg-type]
    ratio = below90["aware"]["mean_distance_km"] / below90["static"]["mean_distance_km"]
    print(f"{'demand':>10} {'mode':>7} {'max util':>9} {'s >100%':>8} {'mean km':>9}")
    for phase in table["static"]:
        for mode in ("static", "aware"):
            r = table[mode][phase]
            print(
                f"{phase:>10} {mode:>7} {r['max_util']:9.2f} {r['seconds_with_a_mirror_over_100']:8d} {r['mean_distance_km']:9.0f}"
            )
    print(
        f"below 90% demand: max utilisation static {below90['static']['max_util']:.2f}, "
        f"aware {below90['aware']['max_util']:.2f} (target <= 1.00); mean distance aware/static "
        f"= {ratio:.2f} (target <= 1.20)"
    )
    series = [
        (f"{mode}: busiest mirror", [(r["t"], r["max_util"]) for r in run["timeline"]])  # type: ignore[index]
        for mode, run in runs.items()
    ]
    series.append(
        ("demand / capacity", [(r["t"], r["demand_share"]) for r in runs["static"]["timeline"]])
    )  # type: ignore[index]
    svg = line_chart(
        series, width=800, height=300, y_label="utilisation of the busiest mirror",
        x_labels=[(0, "0 s"), (args.seconds, f"{args.seconds} s")],
        title="busiest mirror's utilisation: static vs capacity-aware",
    )  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "capacity_sim.svg").write_text(str(svg))
    out = {
        "benchmark": "capacity_sim",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": args.seconds,
        "mirrors": len(build_mirrors(random.Random(99))),
        "total_capacity_mbps": runs["static"]["total_capacity_mbps"],
        "phases": table,
        "below_90_percent_demand": below90,
        "distance_ratio_aware_static": round(ratio, 3),
    }
    if args.sweep:
        with ProcessPoolExecutor(2) as pool:
            rows = list(pool.map(below_90, range(1, args.sweep + 1), [args.seconds] * args.sweep))
        out["seed_sweep_below_90_percent_demand"] = rows
        for row in rows:
            print(
                f"seed {row['seed']:>3}: busiest {row['max_util']:.3f}, "
                f"{row['seconds_with_a_mirror_over_100']} s over 100 %, "
                f"distance x{row['distance_ratio']:.3f}"
            )
    (RESULTS / "capacity_sim.json").write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
