"""Detect the time-zone offset of a mirror's listing (pure).

HTTP listings print local wall time (nginx ``autoindex_localtime on``, Apache, lighttpd), and
the parsers read it as UTC. For files whose sizes match, the difference between the listed
time and the origin's mtime is then the zone's offset.

Definition. ``offset = local - UTC`` (+3600 for CET in winter). A listed time ``t`` (already
read as UTC) *agrees with* origin mtime ``o`` under offset ``k`` when::

    0 <= (t - k) - floor60(o) < 60          floor60(o) = o - o % 60

This covers both precisions at once: a minute listing shows ``floor60(o + k)``, which equals
``floor60(o) + k`` because ``k`` is a multiple of 60, so the difference is exactly 0; a
one-second listing shows ``o + k``, so the difference is ``o % 60`` in 0..59.

Decision. Each pair votes for the one ``k`` (a multiple of ``step`` within +-14 h) it agrees
with, if any. The winner is returned when it has at least ``min_pairs`` votes *and* at least
``min_share`` of all pairs (pairs that agree with no offset count against it): a mirror that is
simply out of date must not be "corrected" into looking fresh. Otherwise 0.

Whole hours (``step=3600``) by default, as the requirement says. Zones at :30 and :45 (India,
Nepal, parts of Australia) can be detected with ``step=900``; it is not the default because a
finer grid lets more unrelated timestamps agree with some offset. Zones with daylight saving
split their files into two offsets (winter and summer mtimes); the season that holds at least
``min_share`` of the pairs wins, otherwise the result is 0 and the files of the other season
show as mtime differences. Feeding only recent files makes the current season win.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["MAX_OFFSET", "agrees", "detect_offset"]

MAX_OFFSET = 14 * 3600  # UTC+14 (Kiribati) .. UTC-12; symmetric bound for simplicity


def agrees(origin_mtime: int, listed: int, offset: int) -> bool:
    """Whether a listed time matches the origin mtime under ``offset`` (see module doc)."""
    return 0 <= (listed - offset) - (origin_mtime - origin_mtime % 60) < 60


def detect_offset(
    pairs: Iterable[tuple[int, int]],
    *,
    step: int = 3600,
    min_pairs: int = 3,
    min_share: float = 0.6,
) -> int:
    """The offset (seconds, a multiple of ``step``) most ``(origin mtime, listed mtime)``
    pairs agree on, when a clear majority does; else 0."""
    if step <= 0 or step % 60:
        raise ValueError("step must be a positive multiple of 60 seconds")
    votes: Counter[int] = Counter()
    total = 0
    for origin_mtime, listed in pairs:
        total += 1
        diff = listed - (origin_mtime - origin_mtime % 60)
        k = diff - diff % step  # the only grid point with 0 <= diff - k < step
        if diff - k < 60 and -MAX_OFFSET <= k <= MAX_OFFSET:
            votes[k] += 1
    if not votes:
        return 0
    offset, count = votes.most_common(1)[0]
    if count >= min_pairs and count >= min_share * total:
        return offset
    return 0
