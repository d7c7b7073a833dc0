"""Parse ``rsync --list-only -r --no-motd`` output (pure; the process is run elsewhere).

One line per entry, as rsync's ``list_file_entry`` prints it::

    -rw-r--r--      1,234,567 2024/01/02 03:04:05 path/with spaces/file.iso
    lrwxrwxrwx              7 2024/01/02 03:04:05 link -> target      (only with -l)

- permissions: 10 characters; the first says the type (``-`` file, ``d`` directory,
  ``l`` symlink; ``p s c b`` specials are skipped);
- size: right-aligned, digits grouped with ``,`` (rsync >= 3.1 default), ``.`` (locales with a
  decimal comma) or not at all (rsync 3.0, ``--no-human-readable``);
- time: ``YYYY/MM/DD hh:mm:ss`` in the local time of the rsync *client*: run it with
  ``TZ=UTC`` and the times are POSIX seconds UTC;
- name: everything after the single space that follows the time. rsync escapes control
  characters (and, in a C locale, non-ASCII bytes) as ``\\#ooo`` octal; those are decoded and
  the name read as UTF-8, undecodable bytes kept as surrogate escapes (like ``os.fsdecode``).

Feed lines split on ``\\n`` only (iterate the byte stream, decode each line with
``"utf-8", "surrogateescape"``): ``str.splitlines`` would also split names at U+2028, U+0085
and the like, which rsync may print unescaped.

Lines that do not start with a permission string (MOTD, ``receiving incremental file list``,
``rsync: ...`` warnings, ``symlink has no referent``) are ignored. A line that starts like an
entry but does not parse is a damaged listing and raises :class:`ListingError` -- except
before the first good entry, where it can only be a MOTD that happens to start like one
(run with ``--no-motd`` anyway).

Symlinks: the origin publishes a symlink to a file as the target's file (see
``origin_walk``), so scan mirrors with ``--copy-links`` (``-L``) to list targets as files; a
symlink that is still listed (dangling, or when ``-L`` is off) is a ``SYMLINK`` entry, which
:func:`seen_files` skips. With ``-l``, ``name -> target`` is split at the first ``" -> "``
(rsync does not escape the arrow, so a name holding " -> " is ambiguous there).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Iterator
from datetime import date
from functools import lru_cache, partial
from typing import NamedTuple

from mirrorhub.errors import ListingError
from mirrorhub.workers.seen import SeenFile

__all__ = [
    "EntryKind",
    "RsyncEntry",
    "parse_rsync_line",
    "parse_rsync_listing",
    "seen_files",
]


class EntryKind(enum.StrEnum):
    FILE = "file"
    DIR = "dir"
    SYMLINK = "symlink"


class RsyncEntry(NamedTuple):
    kind: EntryKind
    path: str  # relative to the listed directory; "." is that directory itself
    size: int
    mtime: int  # POSIX seconds, when rsync ran with TZ=UTC
    target: str | None = None  # symlink target, when rsync printed one (-l)


_KINDS = {"-": EntryKind.FILE, "d": EntryKind.DIR, "l": EntryKind.SYMLINK}
_ENTRY_LIKE = re.compile(r"[-dlpscb][-rwxsStT]{9} ", re.ASCII)
_ENTRY = re.compile(
    r"([-dlpscb])[-rwxsStT]{9} +(\d[\d,.]*) (\d{4}/\d\d/\d\d) (\d\d:\d\d:\d\d) (.+)\Z",
    re.DOTALL | re.ASCII,
)
_GROUPED = re.compile(r"\d{1,3}(?:,\d{3})+\Z|\d{1,3}(?:\.\d{3})+\Z", re.ASCII)
_OCTAL = re.compile(rb"\\#([0-3][0-7]{2})")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
# NamedTuple's generated __new__ is Python code; tuple.__new__ is a third of the cost.
_new_entry = partial(tuple.__new__, RsyncEntry)


# Both caches hit almost always: a tree has few distinct days, and a day has 86,400 seconds.
@lru_cache(maxsize=1 << 14)
def _day_start(ymd: str) -> int:
    """POSIX seconds at 00:00 UTC of ``YYYY/MM/DD``; ValueError when it is no date."""
    return (date(int(ymd[:4]), int(ymd[5:7]), int(ymd[8:10])).toordinal() - _EPOCH_ORDINAL) * 86400


@lru_cache(maxsize=1 << 17)
def _clock(hms: str) -> int:
    """Seconds since midnight of ``hh:mm:ss``; ValueError when it is no time of day."""
    hour, minute, second = int(hms[:2]), int(hms[3:5]), int(hms[6:8])
    if hour > 23 or minute > 59 or second > 60:  # 60: a leap second strftime can print
        raise ValueError(hms)
    return hour * 3600 + minute * 60 + second


def _decode_name(name: str) -> str:
    raw = name.encode("utf-8", "surrogateescape")
    raw = _OCTAL.sub(lambda m: bytes((int(m[1], 8),)), raw)
    return raw.decode("utf-8", "surrogateescape")


def _damaged(line: str, why: str) -> ListingError:
    return ListingError(f"damaged rsync listing line ({why}): {line[:200]!r}")


def parse_rsync_line(line: str) -> RsyncEntry | None:
    """One entry, or None for a line that is no entry (a message) or a special file.

    Raises :class:`ListingError` for a line that starts like an entry but does not parse.
    """
    line = line.rstrip("\r\n")  # rsync escapes CR and LF inside names, so these are ends
    m = _ENTRY.match(line)
    if m is None:
        if _ENTRY_LIKE.match(line):
            raise _damaged(line, "unreadable")
        return None
    type_char, size_text, ymd, hms, name = m.groups()
    kind = _KINDS.get(type_char)
    if kind is None:
        return None  # fifo, socket, device
    if not size_text.isdigit():
        if _GROUPED.match(size_text) is None:
            raise _damaged(line, "size")
        size_text = size_text.replace(",", "").replace(".", "")
    try:
        mtime = _day_start(ymd) + _clock(hms)
    except ValueError:
        raise _damaged(line, "date") from None
    if "\\#" in name:
        name = _decode_name(name)
    target = None
    if kind is EntryKind.SYMLINK:
        name, arrow, link = name.partition(" -> ")
        target = link if arrow else None
    return _new_entry((kind, name, int(size_text), mtime, target))


def parse_rsync_listing(lines: Iterable[str]) -> Iterator[RsyncEntry]:
    """The entries of a whole listing, lazily (a million lines stay a stream).

    Damaged entry-like lines raise :class:`ListingError` with their line number, except
    before the first good entry (see the module docstring).
    """
    started = False
    for number, line in enumerate(lines, 1):
        try:
            entry = parse_rsync_line(line)
        except ListingError as exc:
            if started:
                raise ListingError(f"line {number}: {exc}") from None
            continue  # before the listing: a MOTD line that looks like an entry
        if entry is not None:
            started = True
            yield entry


def seen_files(entries: Iterable[RsyncEntry], prefix: str = "") -> Iterator[SeenFile]:
    """Regular files as :class:`SeenFile` (exact size, 1-second mtime), paths prefixed."""
    for e in entries:
        if e.kind is EntryKind.FILE:
            yield SeenFile(prefix + e.path, e.size, e.size, e.mtime, 1)
