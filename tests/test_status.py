"""The status model, pure: every status, the coverage arithmetic, availability, summary, views."""

from __future__ import annotations

import pytest

from mirrorhub.load import MirrorLoad, make_view, mirror_load
from mirrorhub.status import (
    HOUR,
    Confirmation,
    CoverageInputs,
    MirrorFacts,
    Status,
    Summary,
    availability,
    build_status,
    classify,
    coverage,
    position,
    select_rows,
    to_json,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        (MirrorFacts(1, "a", enabled=False, health="down", scan_failed=True), Status.DISABLED),
        (MirrorFacts(1, "a", health="down", scan_failed=True, lagging=True), Status.DOWN),
        (MirrorFacts(1, "a", health="up", scan_failed=True, lagging=True), Status.SCAN_FAILING),
        (MirrorFacts(1, "a", health="up", lagging=True), Status.LAGGING),
        (MirrorFacts(1, "a", health="unknown", lagging=True), Status.LAGGING),
        (MirrorFacts(1, "a", health="up"), Status.UP),
        (MirrorFacts(1, "a", health="unknown"), Status.UNKNOWN),
        (MirrorFacts(1, "a", health="something new"), Status.UNKNOWN),
    ],
)
def test_classify_first_rule_wins(facts: MirrorFacts, expected: Status) -> None:
    assert classify(facts) is expected


# Files: 6 changed at t=100, 3 at t=200, 1 at t=300.
HIST = [(100.0, 6), (200.0, 3), (300.0, 1)]


def test_coverage_counts_stale_and_differing_files() -> None:
    m = MirrorFacts(1, "a", last_good_scan=200.0)  # scanned after the t=200 batch
    cov = coverage(m, HIST, differing=2)
    # 10 in scope - 1 stale (t=300) - 2 differing = 7
    assert (cov.in_scope, cov.fresh, cov.share) == (10, 7, 0.7)


def test_a_scan_at_exactly_changed_at_is_fresh_like_selection() -> None:
    # selection: stale when last_good_scan < changed_at, so equal means fresh.
    assert coverage(MirrorFacts(1, "a", last_good_scan=300.0), HIST, 0).fresh == 10
    assert coverage(MirrorFacts(1, "a", last_good_scan=299.9), HIST, 0).fresh == 9


def test_never_scanned_covers_nothing_but_confirmed_files() -> None:
    m = MirrorFacts(1, "a", last_good_scan=None)
    assert coverage(m, HIST, differing=5).fresh == 0  # differing is ignored: all is stale
    confirmed = [Confirmation(1, "pub/x", 300.0, differs=False)]
    assert coverage(m, HIST, 0, confirmed).fresh == 1


def test_confirmations_rescue_only_unfresh_in_scope_files_of_their_mirror() -> None:
    m = MirrorFacts(1, "a", last_good_scan=200.0, scope=("pub/",))
    confirmations = [
        Confirmation(1, "pub/new", 300.0, differs=False),  # stale -> rescued
        Confirmation(1, "pub/old", 100.0, differs=True),  # in the diff set -> rescued
        Confirmation(1, "pub/fine", 100.0, differs=False),  # already fresh: no double count
        Confirmation(1, "other/new", 300.0, differs=False),  # out of scope
        Confirmation(2, "pub/new", 300.0, differs=False),  # another mirror
    ]
    cov = coverage(m, HIST, differing=2, confirmations=confirmations)
    assert cov.fresh == 10 - 1 - 2 + 2


def test_coverage_stays_within_bounds_and_is_none_without_files() -> None:
    m = MirrorFacts(1, "a", last_good_scan=500.0)
    assert coverage(m, HIST, differing=50).fresh == 0
    assert coverage(m, [], 0).share is None


def test_availability_hourly_with_gaps_and_weights() -> None:
    now_hour = int(NOW // HOUR)
    buckets = {now_hour: (3, 4), now_hour - 2: (10, 10), now_hour - 30: (0, 5)}
    series, overall = availability(buckets, NOW)
    assert len(series) == 24
    assert series[-1] == 0.75 and series[-3] == 1.0 and series[-2] is None
    assert overall == 13 / 14  # the hour 30 h ago is outside the window
    assert availability({}, NOW) == ((None,) * 24, None)


def test_position_falls_back_to_the_country_centroid() -> None:
    assert position(MirrorFacts(1, "a", latitude=1.0, longitude=2.0)) == (1.0, 2.0)
    lat, lon = position(MirrorFacts(1, "a", country="DE"))
    assert lat is not None and 47 < lat < 55 and lon is not None and 5 < lon < 15
    assert position(MirrorFacts(1, "a", country="ZZ")) == (None, None)
    assert position(MirrorFacts(1, "a")) == (None, None)


def test_summary_text() -> None:
    assert Summary({Status.UP: 3}).text == "3 up, 0 lagging, 0 down"
    text = Summary({Status.UP: 1, Status.DOWN: 2, Status.SCAN_FAILING: 1, Status.UNKNOWN: 4})
    assert text.text == "1 up, 0 lagging, 2 down, 1 scan failing, 4 unknown"


def _model() -> list[MirrorFacts]:
    return [
        MirrorFacts(1, "bravo", country="DE", health="up", last_good_scan=300.0, lag_seconds=5),
        MirrorFacts(2, "alpha", country="FR", health="down", last_good_scan=300.0),
        MirrorFacts(3, "charlie", country="DE", health="up", lagging=True, lag_seconds=7200),
        MirrorFacts(4, "delta", country="US", enabled=False),
        MirrorFacts(5, "echo", country=None, health="unknown"),
    ]


def test_build_status_lists_enabled_mirrors_by_name_and_counts_them() -> None:
    inputs = CoverageInputs(histograms={(): HIST}, differing={1: 1})
    model = build_status(_model(), inputs, {1: {int(NOW // HOUR): (1, 2)}}, NOW)
    assert [r.name for r in model.mirrors] == ["alpha", "bravo", "charlie", "echo"]
    assert model.summary.text == "1 up, 1 lagging, 1 down, 1 unknown"
    assert model.disabled == 1
    bravo = model.mirrors[1]
    assert bravo.coverage == 0.9 and bravo.availability_24h == 0.5
    assert model.mirrors[3].coverage == 0.0  # never scanned


def test_select_rows_filters_and_sorts_with_missing_values_last() -> None:
    model = build_status(_model(), CoverageInputs(histograms={(): HIST}), {}, NOW)
    assert [r.name for r in select_rows(model, country="de")] == ["bravo", "charlie"]
    assert [r.name for r in select_rows(model, status="down")] == ["alpha"]
    by_lag = [r.name for r in select_rows(model, sort="lag")]
    assert by_lag == ["bravo", "charlie", "alpha", "echo"]
    by_lag_desc = [r.name for r in select_rows(model, sort="lag", descending=True)]
    assert by_lag_desc == ["charlie", "bravo", "alpha", "echo"]
    worst_first = [r.status for r in select_rows(model, sort="status")]
    assert worst_first == [Status.DOWN, Status.LAGGING, Status.UNKNOWN, Status.UP]
    assert select_rows(model, sort="nonsense")[0].name == "alpha"


def test_json_document() -> None:
    model = build_status(_model(), CoverageInputs(histograms={(): HIST}), {}, NOW)
    doc = to_json(model)
    assert doc["summary"]["up"] == 1 and doc["summary"]["disabled"] == 1
    assert doc["summary"]["scan failing"] == 0
    first = doc["mirrors"][0]
    assert set(first) >= {
        "name",
        "country",
        "status",
        "lag_seconds",
        "coverage",
        "last_check",
        "availability_24h",
    }
    assert len(first["availability_hourly"]) == 24


def test_json_document_carries_each_mirrors_load_against_its_capacity() -> None:
    facts = [*_model(), MirrorFacts(6, "foxtrot", health="up", capacity=10_000)]
    model = build_status(facts, CoverageInputs(histograms={(): HIST}), {}, NOW)
    # 950 of 1,000 Mbit/s: held back to 3/8 of its weight; foxtrot sent nothing yet.
    view = make_view({"bravo": 412.3}, {"alpha": 950.0}, {"alpha": 1000, "bravo": 1000})
    loads = {m["name"]: m["load"] for m in to_json(model, load=view)["mirrors"]}
    assert loads["bravo"] == {"mbps": 412.3, "capacity_mbps": 1000, "utilisation": 0.4123,
                              "factor": 1.0, "held_back": False}  # fmt: skip
    assert loads["alpha"]["held_back"] is True
    assert loads["alpha"]["factor"] == pytest.approx(0.375)
    assert loads["foxtrot"] == {"mbps": 0.0, "capacity_mbps": 10_000, "utilisation": 0.0,
                                "factor": 1.0, "held_back": False}  # fmt: skip
    # Without a view (no estimate yet, or the feature off): 0 of each capacity, never missing.
    plain = {m["name"]: m["load"] for m in to_json(model)["mirrors"]}
    assert set(plain) == set(loads)
    assert all(x["mbps"] == 0.0 and not x["held_back"] for x in plain.values())
    assert plain["foxtrot"]["capacity_mbps"] == 10_000


@pytest.mark.parametrize(
    ("load", "text", "held_back"),
    [
        (MirrorLoad(412.3, 1000), "412 / 1,000 Mbit/s (41 %)", ""),
        (MirrorLoad(0.0, 1000), "0 / 1,000 Mbit/s (0 %)", ""),
        (MirrorLoad(3.24, 10_000), "3.2 / 10,000 Mbit/s (<1 %)", ""),
        (MirrorLoad(0.01, 100), "<0.1 / 100 Mbit/s (<1 %)", ""),
        (MirrorLoad(940.0, 1000, 0.5), "940 / 1,000 Mbit/s (94 %)",
         "near capacity: gets 50 % of its usual share of new downloads"),
        (MirrorLoad(906.0, 1000, 0.999), "906 / 1,000 Mbit/s (91 %)",
         "near capacity: gets 99 % of its usual share of new downloads"),
        (MirrorLoad(1250.0, 1000, 0.0), "1,250 / 1,000 Mbit/s (125 %)",
         "at capacity: gets no new downloads until its load drops"),
    ],
)  # fmt: skip
def test_load_figures_and_held_back_wording(load: MirrorLoad, text: str, held_back: str) -> None:
    assert load.text == text
    assert load.held_back_text == held_back
    assert load.held_back is bool(held_back)


def test_mirror_load_reads_the_view_and_defaults_to_nothing_sent() -> None:
    view = make_view({"a": 960.0}, {}, {"a": 1000})
    assert mirror_load(view, "a", 1000) == MirrorLoad(960.0, 1000, pytest.approx(0.25))
    assert mirror_load(view, "b", 500) == MirrorLoad(0.0, 500, 1.0)
    assert mirror_load(None, "a", 1000) == MirrorLoad(0.0, 1000, 1.0)
