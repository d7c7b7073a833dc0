"""What a mirror scan saw of one file, whatever the method (rsync or an HTTP listing).

Kept in its own module so the parsers and :mod:`mirrorhub.workers.reconcile` share it without
importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass

# The upper bound of an unknown size (a listing without a size column). Fits a BIGINT.
SIZE_UNKNOWN_MAX = (1 << 63) - 1


@dataclass(frozen=True, slots=True)
class SeenFile:
    """One file as a mirror listed it.

    ``size_min..size_max`` (inclusive) certainly contains the real size: HTTP listings round
    ("1.2M"), so a range is all they can promise; rsync gives ``size_min == size_max``.
    ``mtime`` is POSIX seconds as listed, *before* any time-zone correction; ``None`` when the
    listing has no dates. ``mtime_precision`` is the listing's resolution in seconds: 1 for
    rsync and lighttpd, 60 for nginx and Apache.
    """

    path: str
    size_min: int
    size_max: int
    mtime: int | None
    mtime_precision: int = 1

    @property
    def exact_size(self) -> int | None:
        return self.size_min if self.size_min == self.size_max else None
