"""A bounded cache that forgets its oldest entry first, in constant time.

The hot path's caches (request paths, client contexts, rankings, bands, rendered answers)
used to evict with ``del d[next(iter(d))]`` on a plain dict. CPython leaves a deleted entry
as a hole at the front of the dict's entry table until the next resize, and ``next(iter(d))``
walks over every hole: at 32,768 entries one eviction cost ~21 µs (measured), against
~0.6 µs for :meth:`FifoCache.put`, where a deque remembers the order of insertion. Lookups
stay a plain ``dict.get``: :attr:`FifoCache.get` is the dict's own bound method.

:class:`SpreadFifo` bounds entries kept in many small dicts the same way (the dispatcher's
answers, kept on the bands they were drawn from, so a hit needs no key of its own).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, ValuesView
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class FifoCache(Generic[K, V]):
    """At most ``limit`` entries; storing a new key past that drops the oldest stored one."""

    __slots__ = ("_order", "data", "get", "limit")

    def __init__(self, limit: int) -> None:
        self.data: dict[K, V] = {}
        self.get = self.data.get  # never rebind ``data``: this stays its method
        self.limit = max(1, limit)
        self._order: deque[K] = deque()  # keys in order of insertion (maybe gone since)

    def put(self, key: K, value: V) -> None:
        data = self.data
        if key not in data:
            order = self._order
            while len(data) >= self.limit and order:
                data.pop(order.popleft(), None)
            if len(order) >= 2 * self.limit:
                # Keys taken out with pop() and stored again: keep the deque bounded.
                self._order = order = deque(dict.fromkeys(k for k in order if k in data))
            order.append(key)
        data[key] = value

    def intern(self: FifoCache[K, K], value: K) -> K:
        """The kept value equal to ``value``, else ``value``, kept from now on: equal values
        share one object (a cache whose values are their own keys)."""
        kept = self.data.get(value)
        if kept is None:
            self.put(value, value)
            return value
        return kept

    def pop(self, key: K) -> V | None:
        """Take ``key`` out. Stored again later, it may be dropped as if stored at first."""
        return self.data.pop(key, None)

    def clear(self) -> None:
        self.data.clear()
        self._order.clear()

    def values(self) -> ValuesView[V]:
        return self.data.values()

    def __getitem__(self, key: K) -> V:
        return self.data[key]

    def __contains__(self, key: object) -> bool:
        return key in self.data

    def __iter__(self) -> Iterator[K]:
        return iter(self.data)

    def __len__(self) -> int:
        return len(self.data)


class SpreadFifo(Generic[K, V]):
    """Entries kept in many small dicts (one per owner, e.g. per cached band) under one
    bound: storing a new entry past ``limit`` drops the oldest stored one from whichever
    dict holds it. Lookups are the owners' own ``dict.get``. A dict whose owner is gone
    stays referenced until its entries are dropped or the whole is cleared."""

    __slots__ = ("_keys", "_owners", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        # Each entry's dict and key in two deques of the same length, not one of pairs: a
        # pair per entry was an object for the collector to walk (~100,000 of them, full).
        self._owners: deque[dict[K, V]] = deque()
        self._keys: deque[K] = deque()

    def put(self, into: dict[K, V], key: K, value: V) -> None:
        if key not in into:
            owners = self._owners
            if len(owners) >= self.limit:
                owners.popleft().pop(self._keys.popleft(), None)
            owners.append(into)
            self._keys.append(key)
        into[key] = value

    def forget(self) -> None:
        """Start again, for when every owner dict is dropped too (their entries are not
        taken out: that would cost a pass over all of them)."""
        self._owners.clear()
        self._keys.clear()

    def __len__(self) -> int:
        return len(self._owners)
