"""Clocks shared by the worker tests."""

from __future__ import annotations


class Ticks:
    """A clock every party shares that moves on at each reading, so the readings' order is
    the order in which the code took them."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 1.0
        return self.now
