"""Full builds: a new Index filled page by page (files, then differences, then re-checks)."""

from __future__ import annotations

import contextlib
import gc
import itertools
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
from mirrorhub.selection.ranking import KIND_MISSING, KIND_OUTDATED

# (file id, "7,34,85"): see IndexBuilder.add_diff_lists
DiffList = tuple[int, str]
SHARED_SETS = 65_536  # distinct difference sets shared per build (bounds the lookup tables)


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
        # Files lacking the same mirrors share one object (never changed in place: an
        # update replaces it): less memory, and a lookup instead of a conversion.
        self._shared: dict[str, tuple[Sequence[int], bytes]] = {}

    def add_files(self, rows: Sequence[FileTuple], *, diffs_follow: bool = True) -> None:
        """``diffs_follow``: the differences of these files come next (as they do page by
        page in-process; not when another process reads them)."""
        index = self.index
        with paused_gc():
            start = len(index.paths)
            index.append_files(rows)
            # where the page's files went: the next page of differences is about them
            if diffs_follow:
                ids = [r[0] for r in rows]
                self._recent = dict(zip(ids, range(start, len(index.paths)), strict=True))
            else:
                self._recent = {}

    def add_diffs(self, groups: Iterable[DiffGroup]) -> None:
        index = self.index
        with paused_gc():
            for file_id, mirror_ids, kinds in groups:
                pos = index.position_of_id(file_id)
                if pos is not None:  # a file deleted between the two reads is simply gone
                    index.put_diffs(pos, mirror_ids, kinds)

    def add_diff_lists(self, rows: Iterable[DiffList]) -> None:
        """Like :meth:`add_diffs` for rows of (file id, "7,34,85"): one code per mirror
        lacking the file, its id * 2, plus 1 if the file is missing there rather than
        outdated (what SQL's string aggregation gives; several times faster than ints)."""
        index = self.index
        position: dict[str, int] = {}
        kind: dict[str, int] = {}
        for mirror_id, where in index.mirror_positions().items():
            position[str(2 * mirror_id)] = position[str(2 * mirror_id + 1)] = where
            kind[str(2 * mirror_id)], kind[str(2 * mirror_id + 1)] = KIND_OUTDATED, KIND_MISSING
        wide = len(position) > 2 * 256  # positions past 255
        recent, shared = self._recent, self._shared
        with paused_gc():
            for file_id, text in rows:
                pos = recent.get(file_id)
                if pos is None:
                    pos = index.position_of_id(file_id)
                    if pos is None:  # deleted between the two reads: gone
                        continue
                found = shared.get(text)
                if found is None:
                    codes = text.split(",")
                    try:
                        listed = [position[c] for c in codes]
                    except KeyError:  # a mirror newer than the list read: not selectable
                        ids = [int(c) >> 1 for c in codes]
                        index.put_diffs(pos, ids, bytes([kind.get(c, 0) for c in codes]))
                        continue
                    found = (
                        array("H", listed) if wide else bytes(listed),
                        index.shared_kinds(bytes([kind[c] for c in codes])),
                    )
                    if len(shared) < SHARED_SETS:
                        shared[text] = found
                index.put_diff_positions(pos, *found)

    def add_diff_sets(
        self,
        file_ids: Sequence[int],
        set_of: Sequence[int],
        offsets: Sequence[int],
        positions: bytes | array[int],
        kinds: bytes,
    ) -> None:
        """Differences already converted to what the index holds (a separate process does it,
        see mirrorhub.db.diff_reader): file ``file_ids[i]`` (ascending) lacks set
        ``set_of[i]``, mirror positions ``positions[offsets[k]:offsets[k + 1]]`` with the
        same slice of ``kinds``. Every file gets its set's one shared pair of objects."""
        index = self.index
        with paused_gc():
            shared = index.shared_kinds
            sets = [(positions[a:b], shared(kinds[a:b])) for a, b in itertools.pairwise(offsets)]
            ids, paths, bad, kind_of = index.file_ids, index.paths, index.bad, index.kinds
            end, pos = len(ids), 0
            for file_id, number in zip(file_ids, set_of, strict=True):
                while pos < end and ids[pos] < file_id:
                    pos += 1
                if pos == end:
                    break
                if ids[pos] == file_id and paths[pos]:  # else deleted between the reads: gone
                    bad[pos], kind_of[pos] = sets[number]

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
        self._shared, self._recent = {}, {}
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
