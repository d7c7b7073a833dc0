"""Compare what a mirror scan saw with the origin tree (pure).

The result is the mirror's *difference set* -- the only per-mirror file data we store
(``mirror_file_diffs``) -- plus counts for the scan record and the status page.

Rules:

- Only origin files inside the mirror's ``scope`` (path prefixes such as ``"pub/iso/"``; an
  empty tuple is the whole tree) are compared. Files outside it are neither missing nor
  outdated; they are only counted in ``out_of_scope``.
- One diff per file, the first that applies: ``missing`` (not seen), ``size`` (the origin size
  is outside the seen ``size_min..size_max``), ``mtime``.
- mtime is compared at the listing's precision, after removing the listing's time-zone
  offset: at 1 s exact equality, at 60 s the same minute (``t - t % 60 == o - o % 60``).
- A listing without dates (``mtime is None``) cannot show an mtime difference; the file
  counts as matching on mtime. Sizes still count, and the freshness rule (a later targeted
  check, scan time vs. the origin's ``changed_at``) still applies.
- A mirror copy that is *newer* than the origin with the same size is an ``mtime`` difference:
  same size does not mean same content, and serving the origin's version is the promise.
- ``extra`` counts seen files the origin does not have (anywhere); they never make a diff.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from mirrorhub.workers.seen import SIZE_UNKNOWN_MAX, SeenFile
from mirrorhub.workers.tzoffset import detect_offset

__all__ = [
    "Diff",
    "DiffKind",
    "OriginRow",
    "ScanResult",
    "compare",
    "compare_detecting_tz",
    "detect_tz_offset",
    "mtime_matches",
    "size_matches",
]

OriginRow = tuple[int, str, int, int]  # (file id, path, size, mtime)


class DiffKind(enum.StrEnum):
    MISSING = "missing"
    SIZE = "size"
    MTIME = "mtime"


class Diff(NamedTuple):
    """One row of the mirror's difference set (the ``mirror_file_diffs`` columns)."""

    file_id: int
    kind: DiffKind
    seen_size: int | None  # exact when the listing is; the middle of a rounded range
    seen_mtime: int | None  # UTC (offset removed); None when missing or undated


@dataclass(frozen=True, slots=True)
class ScanResult:
    diffs: list[Diff] = field(default_factory=list)
    files_seen: int = 0  # every file the mirror listed
    files_matching: int = 0  # in-scope origin files the mirror holds in the origin version
    missing: int = 0
    outdated: int = 0  # wrong size or mtime
    extra: int = 0  # listed by the mirror, unknown to the origin
    out_of_scope: int = 0  # origin files outside the mirror's scope, not compared
    tz_offset: int = 0  # seconds removed from listed mtimes (local - UTC)

    @property
    def compared(self) -> int:
        return self.files_matching + self.missing + self.outdated


def size_matches(size: int, seen: SeenFile) -> bool:
    return seen.size_min <= size <= seen.size_max


def mtime_matches(mtime: int, seen: SeenFile, tz_offset: int = 0) -> bool:
    if seen.mtime is None:
        return True  # an undated listing cannot tell; see the module docstring
    listed = seen.mtime - tz_offset
    precision = seen.mtime_precision
    if precision <= 1:
        return listed == mtime
    return listed - listed % precision == mtime - mtime % precision


def _seen_size(seen: SeenFile) -> int | None:
    if seen.size_max >= SIZE_UNKNOWN_MAX:
        return None
    return (seen.size_min + seen.size_max) // 2


def compare(
    origin: Iterable[OriginRow],
    seen: Mapping[str, SeenFile],
    scope: Sequence[str] = (),
    tz_offset: int = 0,
) -> ScanResult:
    """Diff the origin files against what a mirror listed (``seen`` is keyed by path)."""
    scope = tuple(scope)  # str.startswith takes a tuple
    diffs: list[Diff] = []
    matching = missing = outdated = out_of_scope = known = 0
    for file_id, path, size, mtime in origin:
        got = seen.get(path)
        if got is not None:
            known += 1  # counted before the scope test: seen out-of-scope files are not extra
        if scope and not path.startswith(scope):
            out_of_scope += 1
            continue
        if got is None:
            missing += 1
            diffs.append(Diff(file_id, DiffKind.MISSING, None, None))
            continue
        if size_matches(size, got):
            if mtime_matches(mtime, got, tz_offset):
                matching += 1
                continue
            kind = DiffKind.MTIME
        else:
            kind = DiffKind.SIZE
        outdated += 1
        seen_mtime = None if got.mtime is None else got.mtime - tz_offset
        diffs.append(Diff(file_id, kind, _seen_size(got), seen_mtime))
    return ScanResult(
        diffs=diffs,
        files_seen=len(seen),
        files_matching=matching,
        missing=missing,
        outdated=outdated,
        extra=len(seen) - known,
        out_of_scope=out_of_scope,
        tz_offset=tz_offset,
    )


def _pairs(origin: Iterable[OriginRow], seen: Mapping[str, SeenFile]) -> Iterator[tuple[int, int]]:
    for _, path, size, mtime in origin:
        got = seen.get(path)
        if got is not None and got.mtime is not None and size_matches(size, got):
            yield mtime, got.mtime


def detect_tz_offset(
    origin: Iterable[OriginRow], seen: Mapping[str, SeenFile], *, step: int = 3600
) -> int:
    """The listing's time-zone offset, from the files whose sizes match (see ``tzoffset``)."""
    return detect_offset(_pairs(origin, seen), step=step)


def compare_detecting_tz(
    origin: Sequence[OriginRow],
    seen: Mapping[str, SeenFile],
    scope: Sequence[str] = (),
    *,
    step: int = 3600,
) -> ScanResult:
    """:func:`compare` after detecting the listing's offset (``origin`` is read twice).

    The offset is detected on the in-scope files only: the others are not compared.
    """
    prefixes = tuple(scope)
    in_scope = origin if not prefixes else [r for r in origin if r[1].startswith(prefixes)]
    offset = detect_tz_offset(in_scope, seen, step=step)
    return compare(origin, seen, prefixes, offset)
