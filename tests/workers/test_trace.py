"""The trace-file parser (hostile inputs) and the lag rule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from mirrorhub.errors import ProbeFailed
from mirrorhub.workers.trace import (
    MIN_TRACE_TIME,
    TRACE_MAX_BYTES,
    LagState,
    is_lagging,
    next_lag,
    parse_trace,
)

NOW = datetime(2024, 11, 29, 12, 0, tzinfo=UTC).timestamp()
T = datetime(2024, 11, 29, 8, 0, tzinfo=UTC).timestamp()  # 1732867200


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"1732867200", T),
        (b"1732867200\n", T),
        (b"1732867200\r\n", T),
        (b"2024-11-29T08:00:00Z", T),
        (b"2024-11-29T08:00:00Z\n", T),
        (b"2024-11-29t08:00:00z", T),
        (b"2024-11-29T09:00:00+01:00", T),
        (b"2024-11-29T03:30:00-04:30", T),
        (b"2024-11-29T08:00:00.250Z", T + 0.25),
        (b"2024-11-29T08:00:00.123456789Z", T + 0.123456789),
        (b"2000-01-01T00:00:00Z", MIN_TRACE_TIME),
    ],
)
def test_accepted(data: bytes, expected: float) -> None:
    assert parse_trace(data, NOW) == pytest.approx(expected)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\n",
        b"\n\n",
        b"1732867200\n\n",  # two newlines: a second (empty) line
        b"1732867200\n1732867200",  # two lines
        b"1732867200\n2024-11-29T08:00:00Z\n",
        b" 1732867200",  # leading junk
        b"1732867200 ",  # trailing junk
        b"1732867200\t",
        b"1732867200x",
        b"x1732867200",
        b"+1732867200",
        b"-1732867200",  # negative
        b"-1",
        b"0",
        b"1732867200.5",  # fractions only in RFC 3339
        b"1e9",
        b"0x67497f00",
        b"\x00" * 10,  # binary
        b"1732867200\x00",
        b"\xff\xfe1\x00",
        "\uff12\uff10\uff12\uff14-11-29T08:00:00Z".encode(),  # full-width digits: not ASCII
        "1732867200".encode("utf-16"),
        b"\xef\xbb\xbf1732867200",  # UTF-8 BOM
        b"99999999999",  # year 5138: far future
        b"4102444800",  # 2100: far future
        b"915148800",  # 1999: before 2000
        b"1999-12-31T23:59:59Z",
        b"2024-11-29T08:00:00",  # no offset
        b"2024-11-29 08:00:00Z",  # space separator
        b"2024-11-29T08:00Z",  # no seconds
        b"2024-11-29T08:00:00+0100",  # offset without colon
        b"2024-11-29T08:00:00+24:00",  # offset out of range
        b"2024-02-30T08:00:00Z",  # no such day
        b"2024-11-29T24:00:00Z",
        b"2024-11-29T23:59:60Z",  # leap second: refused rather than guessed
        b"2024-11-29T08:00:00.Z",
        b"2024-11-29T08:00:00.1234567890Z",  # more than nanoseconds
        b"Fri Nov 29 08:00:00 UTC 2024",  # date(1) default output
        b"2024-11-29T08:00:00Z\x1b[31m",
        b"1" * (TRACE_MAX_BYTES + 1),  # huge
        b"1732867200" + b"\n" * 300,
        b"$(reboot)",
    ],
)
def test_refused(data: bytes) -> None:
    with pytest.raises(ProbeFailed) as info:
        parse_trace(data, NOW)
    assert info.value.kind == "bad trace file"


def test_future_tolerance_is_one_day() -> None:
    assert parse_trace(str(int(NOW) + 86_400).encode(), NOW) == NOW + 86_400
    with pytest.raises(ProbeFailed):
        parse_trace(str(int(NOW) + 86_401).encode(), NOW)


def test_huge_input_is_refused_without_work() -> None:
    with pytest.raises(ProbeFailed, match="more than"):
        parse_trace(b"1" * 10_000_000, NOW)


# --- lag --------------------------------------------------------------------------------

H = 3600.0
NEVER = LagState()


def test_caught_up_mirror_has_no_lag() -> None:
    assert next_lag(NEVER, T, T, NOW) == 0
    assert next_lag(NEVER, T + 60, T, NOW) == 0  # ahead (clock skew): clamped


def test_first_seen_behind_counts_from_the_newest_publish() -> None:
    # A daily publish at T: the mirror holds yesterday's; it is behind since T, not 24 h.
    assert next_lag(NEVER, T - 24 * H, T, T + 10) == 10
    assert next_lag(NEVER, T - 24 * H, T, T + 5 * H) == 5 * H


def test_a_stuck_mirror_keeps_ageing_across_new_publishes() -> None:
    first = next_lag(NEVER, T - H, T, T + H)  # behind since T
    assert first == H
    prev = LagState(trace_time=T - H, lag_seconds=first, checked_at=T + H)
    # The origin published again at T + 2h; the mirror still holds T - 1h.
    assert next_lag(prev, T - H, T + 2 * H, T + 3 * H) == 3 * H


def test_an_advancing_mirror_restarts_from_the_newest_publish() -> None:
    prev = LagState(trace_time=T - H, lag_seconds=2 * H, checked_at=T + H)
    assert next_lag(prev, T, T + 2 * H, T + 3 * H) == H


def test_origin_clock_ahead_of_ours_clamps_at_zero() -> None:
    assert next_lag(NEVER, T - H, T + 60, T) == 0


def test_lag_never_reaches_before_the_mirror_trace() -> None:
    prev = LagState(trace_time=T - H, lag_seconds=100 * H, checked_at=T)  # corrupt history
    assert next_lag(prev, T - H, T, T + H) == 2 * H


def test_is_lagging() -> None:
    assert not is_lagging(None, 60)
    assert not is_lagging(60, 60)
    assert is_lagging(61, 60)
