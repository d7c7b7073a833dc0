"""When a job runs next: fixed intervals, exponential backoff for failing mirrors (pure)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Retry a failing job after ``base`` x 2^(failures-1) seconds, capped at ``cap``."""

    base: float
    cap: float
    jitter: float = 0.1  # spread retries so failing mirrors do not all come back at once

    def delay(self, failures: int, rng: random.Random) -> float:
        if failures <= 0:
            return 0.0
        raw = min(self.cap, self.base * 2.0 ** min(failures - 1, 30))
        return raw * (1 + self.jitter * (2 * rng.random() - 1))


def next_run(
    now: float,
    interval: float,
    failures: int,
    backoff: Backoff,
    rng: random.Random,
) -> float:
    """The next start of a job that just finished with ``failures`` consecutive failures.

    A healthy job runs every ``interval``; a failing one retries sooner at first (``base``
    below the interval) and then less and less often, never less often than ``cap``.
    """
    if failures <= 0:
        return now + interval * (1 + backoff.jitter * (2 * rng.random() - 1))
    return now + backoff.delay(failures, rng)
