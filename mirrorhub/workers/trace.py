"""Trace files: a strict parser and the lag rule (pure).

The origin rewrites a small file at every publish (``settings.trace_file``, by default
``project/trace/mirrorhub``) holding the publish time; each mirror copies it with the rest of
the tree, so reading it back from a mirror tells which publish the mirror holds. Accepted
content, and nothing else (whatever a mirror reports about itself is hostile input):

- one line of ASCII, at most :data:`TRACE_MAX_BYTES` bytes, optionally ending in ``\\n``
  (or ``\\r\\n``), with no other whitespace;
- either POSIX seconds (``1732867200``) or an RFC 3339 date-time with a ``Z`` or numeric
  offset (``2024-11-29T08:00:00Z``, ``2024-11-29T09:00:00.5+01:00``);
- not before 2000-01-01 and at most one day after "now" (clock skew, not a typo).

Cron example for the origin (after each sync of the tree)::

    date -u +%Y-%m-%dT%H:%M:%SZ > /srv/pub/project/trace/mirrorhub.tmp \\
        && mv /srv/pub/project/trace/mirrorhub.tmp /srv/pub/project/trace/mirrorhub

Lag is "how long the mirror has been missing the origin's newest content", not the
difference between the two trace times: with a daily publish the difference is a whole day
the moment the origin publishes, and excluding every mirror at each publish would send all
traffic to the origin exactly when it peaks. See :func:`next_lag`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone

from mirrorhub.errors import ProbeFailed

TRACE_MAX_BYTES = 256
MIN_TRACE_TIME = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_FUTURE_SECONDS = 86_400.0

_EPOCH = re.compile(r"[0-9]{9,11}")
_RFC3339 = re.compile(
    r"(?P<y>[0-9]{4})-(?P<mo>[0-9]{2})-(?P<d>[0-9]{2})[Tt]"
    r"(?P<h>[0-9]{2}):(?P<mi>[0-9]{2}):(?P<s>[0-9]{2})(?:\.(?P<frac>[0-9]{1,9}))?"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>[0-9]{2}):(?P<om>[0-9]{2}))"
)


def bad(detail: str) -> ProbeFailed:
    return ProbeFailed("bad trace file", detail)


def parse_trace(data: bytes, now: float) -> float:
    """The publish time (POSIX seconds) a trace file holds; raises ProbeFailed."""
    if len(data) > TRACE_MAX_BYTES:
        raise bad(f"more than {TRACE_MAX_BYTES} bytes")
    if data.endswith(b"\r\n"):
        data = data[:-2]
    elif data.endswith(b"\n"):
        data = data[:-1]
    if not data:
        raise bad("empty")
    if not data.isascii():
        raise bad("not ASCII")
    text = data.decode("ascii")
    if not text.isprintable() or " " in text:
        raise bad("more than one line, or control characters or spaces")
    value = float(int(text)) if _EPOCH.fullmatch(text) else _parse_rfc3339(text)
    if value < MIN_TRACE_TIME:
        raise bad("before 2000")
    if value > now + MAX_FUTURE_SECONDS:
        raise bad("more than a day in the future")
    return value


def _parse_rfc3339(text: str) -> float:
    m = _RFC3339.fullmatch(text)
    if m is None:
        raise bad("neither POSIX seconds nor an RFC 3339 date-time")
    if m["z"]:
        tz = UTC
    else:
        hours, minutes = int(m["oh"]), int(m["om"])
        if hours > 23 or minutes > 59:
            raise bad("offset out of range")
        offset = timedelta(hours=hours, minutes=minutes)
        tz = timezone(-offset if m["sign"] == "-" else offset)
    try:
        when = datetime(
            int(m["y"]), int(m["mo"]), int(m["d"]), int(m["h"]), int(m["mi"]), int(m["s"]),
            tzinfo=tz,
        )  # fmt: skip
    except ValueError as exc:  # 2024-02-30, 25:00, second 60 ...
        raise bad(f"invalid date-time: {exc}") from None
    frac = float(f"0.{m['frac']}") if m["frac"] else 0.0
    return when.timestamp() + frac


@dataclass(frozen=True, slots=True)
class LagState:
    """What the last successful trace read recorded for a mirror (mirror_state columns)."""

    trace_time: float | None = None  # the mirror's trace then
    lag_seconds: float | None = None
    checked_at: float | None = None  # when it was read


def next_lag(prev: LagState, mirror_trace: float, origin_trace: float, now: float) -> float:
    """Seconds the mirror has been missing the origin's newest publish (0: caught up).

    The moment a mirror fell behind is the first origin publish after ``mirror_trace``;
    without a history of publishes it is estimated as the origin's trace time when the
    prober first saw this mirror behind at this trace, and carried over (as
    ``checked_at - lag_seconds``) while the mirror's trace stays the same. So a stuck mirror
    ages from the first publish it missed (as seen by the prober), a mirror that is a few
    minutes behind a frequently publishing origin stays a few minutes behind, and a daily
    publish does not make every mirror a day late at once. Known limit: a mirror that keeps
    advancing but stays far behind (syncing from a stale upstream) restarts from the newest
    publish at each advance; per-file freshness from scans still catches its stale files.
    """
    if mirror_trace >= origin_trace:
        return 0.0
    behind_since = min(origin_trace, now)
    if (
        prev.trace_time == mirror_trace
        and prev.lag_seconds is not None
        and prev.lag_seconds > 0
        and prev.checked_at is not None
    ):
        behind_since = min(behind_since, prev.checked_at - prev.lag_seconds)
    behind_since = max(behind_since, mirror_trace)  # it held everything up to mirror_trace
    return max(0.0, now - behind_since)


def is_lagging(lag_seconds: float | None, max_lag_seconds: float) -> bool:
    return lag_seconds is not None and lag_seconds > max_lag_seconds
