"""The in-memory index the hot path reads: an immutable snapshot swapped whole on change."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mirrorhub.domain import Mirror, MirrorState

# (file id, path, size, mtime, sha256 hex or None, changed_at)
FileTuple = tuple[int, str, int, int, str | None, float]


@dataclass(frozen=True)
class IndexSource:
    """Everything the index is built from, as read from the database in one transaction."""

    version: int
    mirrors: Sequence[tuple[Mirror, MirrorState]]
    files: Sequence[FileTuple]
    diffs: Sequence[tuple[int, int]]  # (mirror id, file id) for each file a mirror lacks
