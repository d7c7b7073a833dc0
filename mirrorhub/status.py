"""The public mirror-health model (pure): rows in, a status per mirror and a summary out.

Rules (the page, the JSON and the tests rely on them):

- **Status**, first match wins: ``disabled`` (not enabled); ``down`` (every offered scheme is
  down, see :mod:`mirrorhub.workers.health`); ``scan failing`` (no usable scan: failing for
  longer than the configured number of scans); ``lagging`` (missed the origin's newest publish
  for more than ``max_lag_seconds``); ``up`` (probes answer); ``unknown`` (not probed yet).
- **Coverage** is the share of the mirror's in-scope origin files that are *fresh* in the
  sense the dispatcher uses: not in the mirror's difference set and not changed after its
  last good scan, unless a targeted re-check confirmed the current version. It is computed
  from counts, never per file: ``fresh = in_scope - stale - differing + rescued`` where
  ``stale`` are in-scope files changed after the last good scan (all of them when never
  scanned), ``differing`` the in-scope diffs on files that are not stale, and ``rescued`` the
  confirmed files among those two sets. ``None`` when the origin has no file in scope.
- **Availability** is the share of successful probes (weighted by ``samples``, so
  downsampled rows count for what they stand for), per hour for the last 24 hours; an hour
  without probes is a gap (``None``).
- **Last check** is the last probe; the summary counts enabled mirrors only.
- **Load** is not part of the cached model: the page and the JSON add the dispatcher's live
  estimate (:func:`mirrorhub.load.mirror_load`) against the ``capacity`` kept here.
"""

from __future__ import annotations

import bisect
import enum
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import Any

from mirrorhub.countries import centroid
from mirrorhub.load import LoadView, mirror_load

HOUR = 3600
WINDOW_HOURS = 24


class Status(enum.StrEnum):
    UP = "up"
    LAGGING = "lagging"
    SCAN_FAILING = "scan failing"
    DOWN = "down"
    UNKNOWN = "unknown"
    DISABLED = "disabled"

    @property
    def css(self) -> str:
        return self.value.replace(" ", "-")


# Worst first: the order of the "status" sort and of the summary's optional parts.
SEVERITY = (
    Status.DOWN,
    Status.SCAN_FAILING,
    Status.LAGGING,
    Status.UNKNOWN,
    Status.UP,
    Status.DISABLED,
)


@dataclass(frozen=True, slots=True)
class MirrorFacts:
    """One mirror and its mirror_state row, as plain data (times in POSIX seconds)."""

    id: int
    name: str
    country: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    enabled: bool = True
    scope: tuple[str, ...] = ()
    health: str = "unknown"  # "up" | "down" | "unknown"
    lagging: bool = False
    lag_seconds: float | None = None
    scan_failed: bool = False
    last_good_scan: float | None = None
    last_scan_error: str = ""
    down_schemes: tuple[str, ...] = ()
    last_probe_at: float | None = None
    last_probe_error: str = ""
    capacity: int = 1000  # Mbit/s, as declared


@dataclass(frozen=True, slots=True)
class Confirmation:
    """A targeted re-check saw the origin's current version of a file on a mirror."""

    mirror_id: int
    path: str
    changed_at: float
    differs: bool  # the file is in the mirror's difference set


@dataclass(frozen=True, slots=True)
class CoverageInputs:
    """What the coverage arithmetic needs, from a few grouped queries.

    ``histograms[scope]`` holds the in-scope origin files per ``changed_at``: a
    :class:`Histogram`, or ``(changed_at, files)`` pairs (origin scans stamp whole batches,
    so there are usually few distinct values);
    ``differing[mirror id]`` counts the in-scope diffs on files not changed after the
    mirror's last good scan; ``confirmations`` are re-checks that saw the current version.
    """

    histograms: Mapping[tuple[str, ...], Histogram | Sequence[tuple[float, int]]] = field(
        default_factory=dict
    )
    differing: Mapping[int, int] = field(default_factory=dict)
    confirmations: Sequence[Confirmation] = ()


@dataclass(frozen=True, slots=True)
class Histogram:
    """Files per ``changed_at``, prepared for "how many changed after t" in O(log n).

    Two flat arrays (16 bytes per distinct time): an origin whose files each carry their own
    time (an import, say) costs 16 MB at 1,000,000 files instead of ~100 MB of tuples.
    """

    times: Sequence[float]  # ascending
    after: Sequence[int]  # after[i] = files with changed_at >= times[i]; after[-1] = 0

    @classmethod
    def of(cls, pairs: Histogram | Iterable[tuple[float, int]]) -> Histogram:
        """``pairs`` as a histogram (a histogram is returned as it is)."""
        if isinstance(pairs, Histogram):
            return pairs
        ordered = sorted(pairs)
        return cls.from_sorted(array("d", [t for t, _ in ordered]), [n for _, n in ordered])

    @classmethod
    def from_sorted(cls, times: array[float], counts: Sequence[int]) -> Histogram:
        """``times`` ascending and distinct, ``counts[i]`` the files at ``times[i]``."""
        after = array("q", accumulate(reversed(counts)))  # from the newest time back
        after.reverse()
        after.append(0)
        return cls(times, after)

    @property
    def total(self) -> int:
        return self.after[0]

    def changed_after(self, t: float) -> int:
        return self.after[bisect.bisect_right(self.times, t)]


@dataclass(frozen=True, slots=True)
class Coverage:
    in_scope: int
    fresh: int

    @property
    def share(self) -> float | None:
        return self.fresh / self.in_scope if self.in_scope else None


@dataclass(frozen=True, slots=True)
class MirrorStatus:
    name: str
    country: str | None
    status: Status
    lag_seconds: float | None
    coverage: float | None  # 0..1
    last_check: float | None
    availability: tuple[float | None, ...]  # hourly, oldest first
    availability_24h: float | None
    latitude: float | None  # the mirror's, else its country's centroid
    longitude: float | None
    down_schemes: tuple[str, ...] = ()
    detail: str = ""  # why it is down or its scans fail
    capacity: int = 1000  # Mbit/s, as declared


@dataclass(frozen=True, slots=True)
class Summary:
    counts: Mapping[Status, int]

    @property
    def text(self) -> str:
        """``"3 up, 1 lagging, 0 down"`` plus the other states that occur."""
        c = self.counts
        parts = [f"{c.get(s, 0)} {s.value}" for s in (Status.UP, Status.LAGGING, Status.DOWN)]
        parts += [f"{c[s]} {s.value}" for s in (Status.SCAN_FAILING, Status.UNKNOWN) if c.get(s, 0)]
        return ", ".join(parts)


@dataclass(frozen=True, slots=True)
class StatusModel:
    generated_at: float
    mirrors: tuple[MirrorStatus, ...]  # enabled mirrors, by name
    summary: Summary
    disabled: int = 0


# --- the decisions ------------------------------------------------------------------------


def classify(m: MirrorFacts) -> Status:
    if not m.enabled:
        return Status.DISABLED
    if m.health == "down":
        return Status.DOWN
    if m.scan_failed:
        return Status.SCAN_FAILING
    if m.lagging:
        return Status.LAGGING
    if m.health == "up":
        return Status.UP
    return Status.UNKNOWN


def _in_scope(path: str, scope: tuple[str, ...]) -> bool:
    return not scope or path.startswith(scope)


def coverage(
    m: MirrorFacts,
    histogram: Histogram | Sequence[tuple[float, int]],
    differing: int,
    confirmations: Iterable[Confirmation] = (),
) -> Coverage:
    """See the module docstring; ``histogram`` is the one of ``m.scope``."""
    hist = Histogram.of(histogram)
    in_scope = hist.total
    last = m.last_good_scan
    if last is None:
        stale, differing = in_scope, 0  # never scanned: nothing is known to be fresh
    else:
        stale = hist.changed_after(last)  # changed_at > last good scan
    rescued = sum(
        1
        for c in confirmations
        if c.mirror_id == m.id
        and _in_scope(c.path, m.scope)
        and (c.differs or last is None or c.changed_at > last)
    )
    fresh = max(0, min(in_scope, in_scope - stale - differing + rescued))
    return Coverage(in_scope, fresh)


def availability(
    buckets: Mapping[int, tuple[int, int]], now: float, hours: int = WINDOW_HOURS
) -> tuple[tuple[float | None, ...], float | None]:
    """(share per hour, oldest first, ending with the current hour; share over the window).

    ``buckets`` maps an hour number (POSIX seconds // 3600) to (good samples, samples).
    """
    current = int(now // HOUR)
    series: list[float | None] = []
    good_total = total = 0
    for hour in range(current - hours + 1, current + 1):
        good, n = buckets.get(hour, (0, 0))
        series.append(good / n if n else None)
        good_total += good
        total += n
    return tuple(series), (good_total / total if total else None)


def position(m: MirrorFacts) -> tuple[float | None, float | None]:
    if m.latitude is not None and m.longitude is not None:
        return m.latitude, m.longitude
    found = centroid(m.country) if m.country else None
    return found if found is not None else (None, None)


def build_status(
    mirrors: Iterable[MirrorFacts],
    inputs: CoverageInputs,
    probes: Mapping[int, Mapping[int, tuple[int, int]]],
    now: float,
) -> StatusModel:
    """The model of the status page: enabled mirrors by name, and the summary."""
    by_mirror: dict[int, list[Confirmation]] = {}
    for c in inputs.confirmations:
        by_mirror.setdefault(c.mirror_id, []).append(c)
    prepared: dict[tuple[str, ...], Histogram] = {}
    rows: list[MirrorStatus] = []
    disabled = 0
    for m in mirrors:
        status = classify(m)
        if status is Status.DISABLED:
            disabled += 1
            continue
        histogram = prepared.get(m.scope)
        if histogram is None:
            histogram = prepared[m.scope] = Histogram.of(inputs.histograms.get(m.scope, ()))
        cov = coverage(m, histogram, inputs.differing.get(m.id, 0), by_mirror.get(m.id, ()))
        series, overall = availability(probes.get(m.id, {}), now)
        lat, lon = position(m)
        detail = ""
        if status is Status.DOWN:
            detail = m.last_probe_error
        elif status is Status.SCAN_FAILING:
            detail = m.last_scan_error
        rows.append(
            MirrorStatus(
                name=m.name,
                country=m.country,
                status=status,
                lag_seconds=m.lag_seconds,
                coverage=cov.share,
                last_check=m.last_probe_at,
                availability=series,
                availability_24h=overall,
                latitude=lat,
                longitude=lon,
                down_schemes=m.down_schemes,
                detail=detail,
                capacity=m.capacity,
            )
        )
    rows.sort(key=lambda r: r.name)
    counts: dict[Status, int] = {s: 0 for s in SEVERITY if s is not Status.DISABLED}
    for r in rows:
        counts[r.status] += 1
    return StatusModel(now, tuple(rows), Summary(counts), disabled)


# --- views of the model -------------------------------------------------------------------

SORT_KEYS = ("name", "status", "country", "lag", "coverage", "last_check", "availability")


def _sort_value(row: MirrorStatus, key: str) -> Any:
    if key == "status":
        return SEVERITY.index(row.status)
    if key == "country":
        return row.country or "~"  # unknown countries last
    if key == "lag":
        return row.lag_seconds
    if key == "coverage":
        return row.coverage
    if key == "last_check":
        return row.last_check
    if key == "availability":
        return row.availability_24h
    return row.name.lower()


def select_rows(
    model: StatusModel,
    *,
    status: str = "",
    country: str = "",
    sort: str = "name",
    descending: bool = False,
) -> list[MirrorStatus]:
    """Filter by status value and country code (case-insensitive), then sort.

    Unknown sort keys fall back to the name; missing values sort last either way, and the
    name breaks ties so the order is stable from one request to the next.
    """
    rows = [
        r
        for r in model.mirrors
        if (not status or r.status.value == status)
        and (not country or (r.country or "").upper() == country.upper())
    ]
    key = sort if sort in SORT_KEYS else "name"
    rows.sort(key=lambda r: r.name.lower())
    present = [r for r in rows if _sort_value(r, key) is not None]
    missing = [r for r in rows if _sort_value(r, key) is None]
    present.sort(key=lambda r: _sort_value(r, key), reverse=descending)
    return present + missing


def countries(model: StatusModel) -> list[str]:
    return sorted({r.country for r in model.mirrors if r.country})


def to_json(
    model: StatusModel,
    rows: Iterable[MirrorStatus] | None = None,
    load: LoadView | None = None,
) -> dict[str, Any]:
    """The /-/api/status document (times as POSIX seconds, shares as 0..1); each mirror's
    ``load`` from ``load`` (0 / its capacity without one)."""
    return {
        "generated_at": model.generated_at,
        "summary": {
            "text": model.summary.text,
            **{s.value: n for s, n in model.summary.counts.items()},
            "disabled": model.disabled,
        },
        "mirrors": [
            {
                "name": r.name,
                "country": r.country,
                "status": r.status.value,
                "lag_seconds": r.lag_seconds,
                "coverage": r.coverage,
                "last_check": r.last_check,
                "availability_24h": r.availability_24h,
                "availability_hourly": list(r.availability),
                "down_schemes": list(r.down_schemes),
                "latitude": r.latitude,
                "longitude": r.longitude,
                "load": mirror_load(load, r.name, r.capacity).to_json(),
            }
            for r in (model.mirrors if rows is None else rows)
        ],
    }
