"""What an index is built from and what changes it: plain data, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from mirrorhub.domain import Mirror, MirrorState
from mirrorhub.selection.ranking import KIND_MISSING, KIND_OUTDATED, Band

# (file id, path, size, mtime, sha256 hex or None, changed_at)
FileTuple = tuple[int, str, int, int, str | None, float]
# (file id, ids of the mirrors lacking it, one KIND_* byte per such mirror)
DiffGroup = tuple[int, Sequence[int], bytes]
# (mirror id, file id, checked at)
Confirmation = tuple[int, int, float]
MirrorPair = tuple[Mirror, MirrorState]


@dataclass(frozen=True)
class IndexConfig:
    band: Band = field(default_factory=Band)
    alternates: int = 4
    min_redirect_size: int = 0
    origin_only_patterns: tuple[str, ...] = ()
    # (path prefix, seconds), longest prefix first: how long after an origin change a mirror
    # with the previous version may still serve when no mirror has the new one yet.
    allow_outdated: tuple[tuple[str, float], ...] = ()
    ranking_cache: int = 16384  # cached client rankings (~23 KB each at 200 mirrors)
    band_cache: int = 65536  # cached bands, one per (ranking, file) (~1.7 KB each)


@dataclass(frozen=True)
class IndexSource:
    """Everything an index is built from, as plain rows (tests and small installs; the
    dispatcher streams the same rows from the database page by page instead)."""

    version: int
    mirrors: Sequence[MirrorPair]
    files: Sequence[FileTuple]
    diffs: Sequence[tuple[int, int]]  # (mirror id, file id) for each file a mirror lacks
    missing_kinds: Sequence[tuple[int, int]] = ()  # the (mirror id, file id) diffs of kind missing
    confirmations: Sequence[Confirmation] = ()


@dataclass(frozen=True)
class IndexDelta:
    """What changed since an index's version.

    Mirrors come whole (a few hundred rows); files only where they may have changed:
    ``file_ids`` names every such file, ``files`` holds the current rows of those still in
    the origin (a named id without a row is gone), ``diffs`` and ``confirmations`` their
    complete current sets.
    """

    version: int
    mirrors: Sequence[MirrorPair]
    file_ids: frozenset[int]
    files: Sequence[FileTuple] = ()
    diffs: Sequence[DiffGroup] = ()
    confirmations: Sequence[Confirmation] = ()


def group_diffs(
    diffs: Iterable[tuple[int, int]], missing: Iterable[tuple[int, int]] = ()
) -> list[DiffGroup]:
    """(mirror id, file id) pairs as one group per file, ordered by file id."""
    missing_set = set(missing)
    grouped: dict[int, tuple[list[int], bytearray]] = {}
    for mirror_id, file_id in diffs:
        ids, kinds = grouped.setdefault(file_id, ([], bytearray()))
        ids.append(mirror_id)
        kinds.append(KIND_MISSING if (mirror_id, file_id) in missing_set else KIND_OUTDATED)
    return [(f, ids, bytes(kinds)) for f, (ids, kinds) in sorted(grouped.items())]


def restrict(source: IndexSource, file_ids: frozenset[int], version: int) -> IndexDelta:
    """The delta that brings an index to ``source`` for the files in ``file_ids``."""
    return IndexDelta(
        version=version,
        mirrors=source.mirrors,
        file_ids=file_ids,
        files=[f for f in source.files if f[0] in file_ids],
        diffs=group_diffs(
            [d for d in source.diffs if d[1] in file_ids],
            [d for d in source.missing_kinds if d[1] in file_ids],
        ),
        confirmations=[c for c in source.confirmations if c[1] in file_ids],
    )
