"""The differences of a full build, read by a separate process (SQLite only).

A full build on SQLite spends its time in two bulk reads (files, then differences grouped
per file) and in filling the index from them, all under one GIL: reading and filling
cannot overlap in threads (the driver's thread must retake the GIL at every row). A child
process has its own GIL. It runs this file as a script (``python -I -S diff_reader.py``:
standard library only, nothing of mirrorhub or SQLAlchemy is imported, ~40 ms to start),
opens the same database read-only, reads the index version and the grouped differences in
one read transaction, converts each distinct difference set to the bytes the index holds
(mirror positions and kinds), and writes one columnar blob to stdout, while the parent
reads and fills the files.

Protocol: argv is ``DATABASE`` and the mirror ids in index position order, comma-separated
(empty for none). Output on success: :data:`HEADER` (magic, index version, files, distinct
sets, total entries, wide flag), then the file ids (``array("q")``), each file's set
number (``array("I")``), the sets' offsets (``array("I")``, one more than the sets), the
positions (bytes, or ``array("H")`` when there are more than 256 mirrors) and the kinds
(bytes). Exit status 0; anything else is a failure the parent falls back from.

Codes are what the in-process path reads too: mirror id * 2, + 1 if missing. A mirror not
in the list (added after the parent read the mirrors) is dropped from the set, as
``Index.put_diffs`` does; a file left with no set is left out.
"""

from __future__ import annotations

import gc
import itertools
import struct
import sys
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

MAGIC = b"MHD1"
HEADER = struct.Struct("<4sqIIIB")  # magic, version, files, sets, entries, wide
KIND_MISSING = 0  # mirrorhub.selection's values (a test checks they agree)
KIND_OUTDATED = 1
GROUPS = (  # in the order of the covering index ix_mirror_file_diffs_file_id: no sort
    "SELECT file_id, group_concat(mirror_id * 2 + (kind = 'missing')) "
    "FROM mirror_file_diffs GROUP BY file_id ORDER BY file_id"
)
CHUNK = 50_000  # rows read at a time
BATCH = 1_000  # new sets converted at a time (their codes as strings: a few MB at most)
VERSION = "SELECT version FROM index_version WHERE id = 1"


@dataclass(frozen=True)
class DiffSets:
    """The result: file ``file_ids[i]`` (ascending) lacks set ``set_of[i]``; set ``k`` is
    ``positions[offsets[k]:offsets[k + 1]]`` with the same slice of ``kinds``."""

    version: int
    file_ids: array[int]
    set_of: array[int]
    offsets: array[int]
    positions: bytes | array[int]
    kinds: bytes


class SetTable:
    """Distinct code lists ("7,34,85") as numbered sets of mirror positions and kinds."""

    def __init__(self, mirror_ids: Sequence[int]) -> None:
        self.wide = len(mirror_ids) > 256
        self._position: dict[str, int] = {}
        self._kind: dict[str, int] = {}
        for where, mirror_id in enumerate(mirror_ids):
            outdated, missing = str(2 * mirror_id), str(2 * mirror_id + 1)
            self._position[outdated] = self._position[missing] = where
            self._kind[outdated], self._kind[missing] = KIND_OUTDATED, KIND_MISSING
        self.offsets = array("I", [0])
        self.positions: array[int] = array("H" if self.wide else "B")
        self.kinds = bytearray()
        self._known: dict[str, int] = {}  # code list -> set number; -1: no known mirror

    def numbers(self, texts: Sequence[str]) -> Iterator[int]:
        """Each code list's set number (converting the new ones, all at once)."""
        known = self._known
        fresh = [t for t in dict.fromkeys(texts) if t not in known]
        for start in range(0, len(fresh), BATCH):
            self._add(fresh[start : start + BATCH])
        return map(known.__getitem__, texts)

    def _add(self, fresh: list[str]) -> None:
        codes = ",".join(fresh).split(",")
        try:
            found = list(map(self._position.__getitem__, codes))
        except KeyError:  # a mirror newer than the list: one at a time, leaving it out
            for text in fresh:
                self._add_one(text)
        else:
            first = len(self.offsets) - 1
            self.positions.extend(found)
            self.kinds += bytes(map(self._kind.__getitem__, codes))
            sizes = [t.count(",") + 1 for t in fresh]
            ends = itertools.accumulate(sizes, initial=self.offsets[-1])
            self.offsets.extend(itertools.islice(ends, 1, None))
            self._known.update(zip(fresh, range(first, first + len(fresh)), strict=True))

    def _add_one(self, text: str) -> None:
        codes = [c for c in text.split(",") if c in self._position]
        if not codes:  # only mirrors newer than the list: the file lacks none of the others
            self._known[text] = -1
            return
        self._known[text] = len(self.offsets) - 1
        self.positions.extend([self._position[c] for c in codes])
        self.kinds += bytes([self._kind[c] for c in codes])
        self.offsets.append(len(self.kinds))


def read(database: str, mirror_ids: Sequence[int]) -> DiffSets:
    import sqlite3

    table = SetTable(mirror_ids)
    file_ids, set_of = array("q"), array("I")
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA query_only = 1")
        conn.execute("BEGIN")  # one snapshot for the version and every difference
        row = conn.execute(VERSION).fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        cursor = conn.execute(GROUPS)
        while rows := cursor.fetchmany(CHUNK):
            ids, texts = zip(*rows, strict=True)
            numbers = list(table.numbers(texts))
            if -1 in numbers:
                pairs = [(f, n) for f, n in zip(ids, numbers, strict=True) if n >= 0]
                ids, numbers = tuple(f for f, _ in pairs), [n for _, n in pairs]
            file_ids.extend(ids)
            set_of.extend(numbers)
        conn.execute("COMMIT")
    finally:
        conn.close()
    positions = table.positions if table.wide else table.positions.tobytes()
    return DiffSets(version, file_ids, set_of, table.offsets, positions, bytes(table.kinds))


def encode(sets: DiffSets) -> list[bytes]:
    wide = isinstance(sets.positions, array)
    header = HEADER.pack(
        MAGIC, sets.version, len(sets.file_ids), len(sets.offsets) - 1, len(sets.kinds), wide
    )
    positions = sets.positions.tobytes() if isinstance(sets.positions, array) else sets.positions
    return [
        header,
        sets.file_ids.tobytes(),
        sets.set_of.tobytes(),
        sets.offsets.tobytes(),
        positions,
        sets.kinds,
    ]


def decode(data: bytes) -> DiffSets:
    """The child's output; ValueError when it is not one whole result."""
    if len(data) < HEADER.size:
        raise ValueError(f"{len(data)} bytes, not a result")
    magic, version, files, sets, entries, wide = HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"bad magic {magic!r}")
    view = memoryview(data)[HEADER.size :]
    out: list[array[int]] = []
    for code, count in (
        ("q", files),
        ("I", files),
        ("I", sets + 1),
        ("H" if wide else "B", entries),
    ):
        part = array(code)
        size = part.itemsize * count
        if len(view) < size:
            raise ValueError("truncated result")
        part.frombytes(view[:size])
        view = view[size:]
        out.append(part)
    if len(view) != entries:
        raise ValueError("truncated result" if len(view) < entries else "trailing bytes")
    file_ids, set_of, offsets, positions = out
    return DiffSets(
        version, file_ids, set_of, offsets, positions if wide else positions.tobytes(), bytes(view)
    )


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: diff_reader.py DATABASE MIRROR_IDS", file=sys.stderr)
        return 2
    mirror_ids = [int(m) for m in argv[1].split(",") if m]
    gc.disable()  # nothing here makes cycles; the collector would rescan every row
    sets = read(argv[0], mirror_ids)
    out = sys.stdout.buffer
    for part in encode(sets):
        out.write(part)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
