"""Time-zone offset detection from (origin mtime, listed mtime) pairs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mirrorhub.workers.listing import parse_listing
from mirrorhub.workers.tzoffset import MAX_OFFSET, agrees, detect_offset

FIXTURES = Path(__file__).parent / "fixtures"
H = 3600
T0 = 1704164645  # 2024-01-02 03:04:05 UTC
MINUTE = T0 - T0 % 60  # 03:04:00


@pytest.mark.parametrize(
    ("origin", "listed", "offset", "expected"),
    [
        (T0, MINUTE, 0, True),  # minute listing, UTC
        (T0, MINUTE + H, H, True),  # minute listing, UTC+1
        (T0, MINUTE + H, 0, False),
        (T0, MINUTE - 5 * H, -5 * H, True),
        (T0, MINUTE + 60, 0, False),  # the next minute
        (T0, MINUTE - 60, 0, False),
        (T0, T0, 0, True),  # second listing: 0 <= o % 60 < 60
        (T0, T0 + 2 * H, 2 * H, True),
        (T0, MINUTE + 59, 0, True),  # any second of the right minute
        (MINUTE, MINUTE, 0, True),
    ],
)
def test_agrees(origin: int, listed: int, offset: int, expected: bool) -> None:
    assert agrees(origin, listed, offset) is expected


def minute_listing(origins: list[int], offset: int) -> list[tuple[int, int]]:
    return [(o, (o + offset) - (o + offset) % 60) for o in origins]


ORIGINS = [T0 + i * 7919 for i in range(10)]


@pytest.mark.parametrize(
    ("pairs", "expected"),
    [
        ([], 0),
        (minute_listing(ORIGINS, 0), 0),
        (minute_listing(ORIGINS, H), H),
        (minute_listing(ORIGINS, -8 * H), -8 * H),
        (minute_listing(ORIGINS, 14 * H), 14 * H),
        (minute_listing(ORIGINS, 15 * H), 0),  # beyond any real zone
        (minute_listing(ORIGINS[:2], H), 0),  # too few pairs
        (minute_listing(ORIGINS[:3], H), H),
        (minute_listing(ORIGINS[:5], H) + minute_listing(ORIGINS[5:], 2 * H), 0),  # 50/50
        (minute_listing(ORIGINS[:6], H) + minute_listing(ORIGINS[6:], 2 * H), H),  # 60 %
        (minute_listing(ORIGINS[:6], H) + [(o, o + 12345) for o in ORIGINS[6:]], H),
        (minute_listing(ORIGINS[:5], H) + [(o, o + 12345) for o in ORIGINS[5:]], 0),
        ([(o, o + 2 * H) for o in ORIGINS], 2 * H),  # second precision
        (minute_listing(ORIGINS, 5 * H + 1800), 0),  # India: not a whole hour
    ],
)
def test_detect_offset(pairs: list[tuple[int, int]], expected: int) -> None:
    assert detect_offset(pairs) == expected


def test_half_and_quarter_hour_zones_with_a_finer_step() -> None:
    assert detect_offset(minute_listing(ORIGINS, 5 * H + 1800), step=900) == 5 * H + 1800
    assert detect_offset(minute_listing(ORIGINS, 5 * H + 2700), step=900) == 5 * H + 2700
    with pytest.raises(ValueError, match="step"):
        detect_offset([], step=90)


def test_outdated_files_are_not_mistaken_for_an_offset() -> None:
    # A mirror one day behind: every file an exact 24 h older. 24 h is outside the range.
    assert detect_offset([(o, o - 24 * H) for o in ORIGINS]) == 0


def test_real_localtime_listing() -> None:
    tree = json.loads((FIXTURES / "tree.json").read_text())["files"]
    html = (FIXTURES / "nginx-localtime-paris-pub.html").read_text()
    listing = parse_listing(html, "http://127.0.0.5:18083/pub/")
    pairs = [
        (tree[f"pub/{e.name}"][1], e.mtime)
        for e in listing.entries
        if not e.is_dir and e.mtime is not None
    ]
    assert len(pairs) >= 10
    assert detect_offset(pairs) == 3600  # Europe/Paris in January


@given(
    origins=st.lists(st.integers(0, 2**33), min_size=3, max_size=30),
    hours=st.integers(-14, 14),
    seconds=st.booleans(),
)
def test_any_whole_hour_offset_is_found(origins: list[int], hours: int, seconds: bool) -> None:
    offset = hours * H
    pairs = [(o, o + offset) for o in origins] if seconds else minute_listing(origins, offset)
    assert all(agrees(o, t, offset) for o, t in pairs)
    assert detect_offset(pairs) == offset
    assert abs(offset) <= MAX_OFFSET
