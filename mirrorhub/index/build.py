"""Full builds: a new Index filled page by page (files, then differences, then re-checks)."""

from __future__ import annotations

import contextlib
import gc
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence

from mirrorhub.index.snapshot import Index
from mirrorhub.index.source import (
    Confirmation,
    DiffGroup,
    FileTuple,
    IndexConfig,
    IndexSource,
    MirrorPair,
    group_diffs,
)
from mirrorhub.selection import KIND_MISSING, KIND_OUTDATED

# (file id, "3,17,42", "100"): see IndexBuilder.add_diff_lists
DiffList = tuple[int, str, str]
_KINDS = bytes.maketrans(b"10", bytes([KIND_MISSING, KIND_OUTDATED]))


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """A build allocates many long-lived objects at once; letting the cyclic collector
    rescan them again and again makes it superlinear, so it waits (one page at a time)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class IndexBuilder:
    """Feeds a new Index. Files must come in ascending id order; differences and re-checks
    may come in any order once the files they name are in."""

    def __init__(
        self,
        config: IndexConfig,
        mirrors: Sequence[MirrorPair],
        version: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.index = Index(config, mirrors, version, clock())
        self._clock = clock
        self._recent: dict[int, int] = {}

    def add_files(self, rows: Sequence[FileTuple]) -> None:
        index = self.index
        with paused_gc():
            start = len(index.paths)
            index.append_files(rows)
            # where the page's files went: the next page of differences is about them
            ids = [r[0] for r in rows]
            self._recent = dict(zip(ids, range(start, len(index.paths)), strict=True))

    def add_diffs(self, groups: Iterable[DiffGroup]) -> None:
        index = self.index
        with paused_gc():
            for file_id, mirror_ids, kinds in groups:
                pos = index.position_of_id(file_id)
                if pos is not None:  # a file deleted between the two reads is simply gone
                    index.put_diffs(pos, mirror_ids, kinds)

    def add_diff_lists(self, rows: Iterable[DiffList]) -> None:
        """Like :meth:`add_diffs` for rows of (file id, "3,17,42", "100"): comma-separated
        mirror ids and one character per id, "1" for missing and "0" for outdated (what
        SQL's string aggregation gives; several times faster than parsing to ints)."""
        index = self.index
        by_text = {str(m): p for m, p in index.mirror_positions().items()}
        wide = len(by_text) > 256  # positions past 255
        recent = self._recent
        with paused_gc():
            for file_id, ids, kinds in rows:
                pos = recent.get(file_id)
                if pos is None:
                    pos = index.position_of_id(file_id)
                    if pos is None:  # deleted between the two reads: gone
                        continue
                try:
                    found = [by_text[m] for m in ids.split(",")]
                except KeyError:  # a mirror newer than the list read: not selectable here
                    self._add_slowly(pos, ids, kinds)
                    continue
                index.put_diff_positions(
                    pos,
                    array("H", found) if wide else bytes(found),
                    kinds.encode("ascii").translate(_KINDS),
                )

    def _add_slowly(self, pos: int, ids: str, kinds: str) -> None:
        mirror_ids = [int(m) for m in ids.split(",")]
        self.index.put_diffs(pos, mirror_ids, kinds.encode("ascii").translate(_KINDS))

    def add_confirmations(self, rows: Iterable[Confirmation]) -> None:
        per_file: dict[int, dict[int, float]] = {}
        for mirror_id, file_id, checked in rows:
            per_file.setdefault(file_id, {})[mirror_id] = checked
        index = self.index
        for file_id, confirmed in per_file.items():
            pos = index.position_of_id(file_id)
            if pos is not None:
                index.put_confirmations(pos, confirmed)

    def finish(self) -> Index:
        self.index.built_at = self._clock()
        return self.index


def build_index(
    source: IndexSource, config: IndexConfig, clock: Callable[[], float] = time.time
) -> Index:
    """An index of ``source`` (rows in memory: tests, tools and small installs)."""
    builder = IndexBuilder(config, source.mirrors, source.version, clock)
    builder.add_files(sorted(source.files))
    builder.add_diffs(group_diffs(source.diffs, source.missing_kinds))
    builder.add_confirmations(source.confirmations)
    return builder.finish()


def empty_index(config: IndexConfig, clock: Callable[[], float] = time.time) -> Index:
    return build_index(IndexSource(version=-1, mirrors=(), files=(), diffs=()), config, clock)
