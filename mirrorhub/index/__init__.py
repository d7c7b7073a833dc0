"""The dispatcher's in-memory index of origin files and mirrors.

:mod:`.source` the data it is made of, :mod:`.snapshot` the index itself (what the hot path
reads), :mod:`.build` full builds, :mod:`.delta` changes applied in place, :mod:`.refresh`
keeping it current, :mod:`.networks` mirrors' own networks.
"""

from mirrorhub.index.build import IndexBuilder, build_index, empty_index
from mirrorhub.index.delta import apply_delta, apply_now
from mirrorhub.index.networks import NetworkTable, parse_address
from mirrorhub.index.refresh import (
    IndexHolder,
    IndexLoader,
    SourceLoader,
    refresh_loop,
    refresh_once,
)
from mirrorhub.index.snapshot import Index, NeedsRebuild
from mirrorhub.index.source import (
    DiffGroup,
    FileTuple,
    IndexConfig,
    IndexDelta,
    IndexSource,
    group_diffs,
    restrict,
)

__all__ = [
    "DiffGroup",
    "FileTuple",
    "Index",
    "IndexBuilder",
    "IndexConfig",
    "IndexDelta",
    "IndexHolder",
    "IndexLoader",
    "IndexSource",
    "NeedsRebuild",
    "NetworkTable",
    "SourceLoader",
    "apply_delta",
    "apply_now",
    "build_index",
    "empty_index",
    "group_diffs",
    "parse_address",
    "refresh_loop",
    "refresh_once",
    "restrict",
]
