"""FifoCache: bounded, oldest stored first out, lookups through the dict's own get."""

from __future__ import annotations

import random

from mirrorhub.fifo import FifoCache, SpreadFifo


def test_keeps_the_newest_within_its_limit() -> None:
    cache: FifoCache[int, str] = FifoCache(3)
    for i in range(5):
        cache.put(i, str(i))
    assert list(cache) == [2, 3, 4] and len(cache) == 3
    assert cache.get(1) is None and cache.get(4) == "4" and cache[3] == "3"
    cache.put(3, "three")  # storing a present key again neither evicts nor reorders
    assert list(cache) == [2, 3, 4] and cache.get(3) == "three"
    cache.put(5, "5")
    assert list(cache) == [3, 4, 5]


def test_get_stays_bound_to_the_entries_after_clear() -> None:
    cache: FifoCache[str, int] = FifoCache(2)
    cache.put("a", 1)
    cache.clear()
    assert len(cache) == 0 and cache.get("a") is None
    cache.put("b", 2)
    cache.put("c", 3)
    cache.put("d", 4)
    assert cache.get("b") is None and cache.get("d") == 4 and "c" in cache


def test_agrees_with_a_plain_fifo() -> None:
    rng = random.Random(7)
    cache: FifoCache[int, int] = FifoCache(8)
    model: dict[int, int] = {}  # insertion-ordered: the reference FIFO
    for step in range(5_000):
        key = rng.randrange(40)
        if key not in model:
            while len(model) >= 8:
                del model[next(iter(model))]
        model[key] = step
        cache.put(key, step)
        assert cache.data == model and list(cache) == list(model)


def test_stays_bounded_under_pops_and_keeps_the_latest_values() -> None:
    rng = random.Random(7)
    cache: FifoCache[int, int] = FifoCache(8)
    latest: dict[int, int] = {}
    for step in range(20_000):
        key = rng.randrange(40)
        if rng.random() < 0.3:
            cache.pop(key)
            assert key not in cache
            continue
        latest[key] = step
        cache.put(key, step)
        assert cache.get(key) == step
        assert len(cache) <= 8 and len(cache._order) <= 2 * 8
        assert all(latest[k] == v for k, v in cache.data.items())
    for key in range(100, 108):  # pops do not leave it short for good
        cache.put(key, key)
    assert sorted(cache) == list(range(100, 108))


def test_pops_of_a_cache_that_never_fills_do_not_grow_it() -> None:
    cache: FifoCache[int, int] = FifoCache(8)  # as Index.touch does to the rendered paths
    for step in range(1_000):
        cache.pop(step % 3)
        cache.put(step % 3, step)
    assert len(cache) == 3 and len(cache._order) <= 2 * 8


def test_spread_entries_share_one_bound_and_go_oldest_first() -> None:
    kept: SpreadFifo[int, str] = SpreadFifo(3)
    a: dict[int, str] = {}
    b: dict[int, str] = {}
    kept.put(a, 1, "a1")
    kept.put(b, 1, "b1")
    kept.put(a, 2, "a2")
    kept.put(a, 1, "a1 again")  # stored again: no second place in the order
    assert len(kept) == 3 and a == {1: "a1 again", 2: "a2"} and b == {1: "b1"}
    kept.put(b, 2, "b2")  # past the bound: a's first entry, the oldest, goes
    assert a == {2: "a2"} and b == {1: "b1", 2: "b2"} and len(kept) == 3
    kept.put(a, 3, "a3")
    assert b == {2: "b2"} and a == {2: "a2", 3: "a3"}


def test_spread_entries_stay_bounded_over_many_owners() -> None:
    kept: SpreadFifo[int, int] = SpreadFifo(50)
    owners: list[dict[int, int]] = [{} for _ in range(40)]
    for n in range(2_000):
        kept.put(owners[n % 40], n % 7, n)
    assert sum(len(o) for o in owners) == len(kept) == 50
    kept.forget()
    assert len(kept) == 0


def test_intern_gives_the_kept_equal_value_within_the_bound() -> None:
    cache: FifoCache[tuple[int, ...], tuple[int, ...]] = FifoCache(2)
    first = tuple([1, 2])
    assert cache.intern(first) is first
    again = tuple([1, 2])
    assert again is not first and cache.intern(again) is first
    cache.intern((3,))
    cache.intern((4,))  # past the bound: (1, 2) is dropped
    assert cache.intern(again) is again
