"""The load recorder: the view at once, the estimator per step, as if added one by one."""

from __future__ import annotations

import random
from types import SimpleNamespace
from typing import Any

import pytest

from mirrorhub.domain import Outcome
from mirrorhub.load import LoadEstimator, LoadView
from mirrorhub.web.loadsync import LoadRecorder


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("seed", range(8))
def test_estimate_equals_adding_every_redirect_at_once(seed: int) -> None:
    rng = random.Random(seed)
    clock = Clock(1000.0)
    direct = LoadEstimator(window=10.0, step=1.0, clock=clock)
    batched = LoadEstimator(window=10.0, step=1.0, clock=clock)
    sizes = [rng.randrange(1, 10**9) for _ in range(20)]
    state: Any = SimpleNamespace(holder=SimpleNamespace(current=SimpleNamespace(sizes=sizes)))
    recorder = LoadRecorder(state, batched)
    recorder.view = LoadView({}, {}, {"a": 500, "b": 800}, window=10.0)
    view = LoadView({}, {}, {"a": 500, "b": 800}, window=10.0)
    for _ in range(400):
        clock.now += rng.choice((0.0, 0.0, 0.1, 0.45, 1.0, 3.0, 12.0))
        mirror, pos = rng.choice("abc"), rng.randrange(len(sizes))
        recorder.record(Outcome.MIRROR, mirror, pos, None, {}, 0.0)
        direct.add(mirror, sizes[pos])
        view.add(mirror, sizes[pos])
        assert recorder.view.mbps == view.mbps  # the next pick sees every redirect
        assert recorder.view.factors == view.factors
        if rng.random() < 0.1:  # the sync task reads the estimate
            assert recorder.estimate() == pytest.approx(direct.mbps())
    assert recorder.estimate() == pytest.approx(direct.mbps())
    assert recorder.pending == {}


def test_only_redirects_to_a_mirror_count() -> None:
    clock = Clock(0.0)
    state: Any = SimpleNamespace(holder=SimpleNamespace(current=SimpleNamespace(sizes=[10**6])))
    recorder = LoadRecorder(state, LoadEstimator(window=8.0, step=1.0, clock=clock))
    recorder.record(Outcome.ORIGIN, None, 0, None, {}, 0.0)
    recorder.record(Outcome.MIRROR, "a", 5, None, {}, 0.0)  # not in this index
    recorder.record(Outcome.MIRROR, "a", 0, None, {}, 0.0)
    assert recorder.estimate() == {"a": pytest.approx(1.0)}  # 8 Mbit over 8 s
