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

import struct
import sys
from array import array
from dataclasses import dataclass

MAGIC = b"MHD1"
HEADER = struct.Struct("<4sqIIIB")  # magic, version, files, sets, entries, wide
KIND_MISSING = 0  # mirrorhub.selection's values (a test checks they agree)
KIND_OUTDATED = 1
GROUPS = (
    "SELECT file_id, group_concat(mirror_id * 2 + (kind = 'missing')) "
    "FROM mirror_file_diffs GROUP BY file_id"
)
VERSION = "SELECT version FROM index_version WHERE id = 1"


@dataclass(frozen=True)
class DiffSets:
    """The result: file ``file_ids[i]`` lacks set ``set_of[i]``; set ``k`` is
    ``positions[offsets[k]:offsets[k + 1]]`` with the same slice of ``kinds``."""

    version: int
    file_ids: array[int]
    set_of: array[int]
    offsets: array[int]
    positions: bytes | array[int]
    kinds: bytes


def read(database: str, mirror_ids: list[int]) -> DiffSets:
    import sqlite3

    wide = len(mirror_ids) > 256
    position: dict[str, int] = {}
    kind: dict[str, int] = {}
    for where, mirror_id in enumerate(mirror_ids):
        position[str(2 * mirror_id)] = position[str(2 * mirror_id + 1)] = where
        kind[str(2 * mirror_id)], kind[str(2 * mirror_id + 1)] = KIND_OUTDATED, KIND_MISSING
    file_ids, set_of, offsets = array("q"), array("I"), array("I", [0])
    positions: array[int] = array("H" if wide else "B")
    kinds = bytearray()
    known: dict[str, int] = {}  # code list -> set number
    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA query_only = 1")
        conn.execute("BEGIN")  # one snapshot for the version and every difference
        row = conn.execute(VERSION).fetchone()
        version = int(row[0]) if row and row[0] is not None else 0
        for file_id, text in conn.execute(GROUPS):
            number = known.get(text)
            if number is None:
                codes = [c for c in text.split(",") if c in position]
                if not codes:  # only mirrors newer than the parent's list
                    continue
                number = known[text] = len(offsets) - 1
                positions.extend([position[c] for c in codes])
                kinds += bytes([kind[c] for c in codes])
                offsets.append(len(kinds))
            file_ids.append(file_id)
            set_of.append(number)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return DiffSets(
        version, file_ids, set_of, offsets, positions if wide else positions.tobytes(), bytes(kinds)
    )


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
    sets = read(argv[0], mirror_ids)
    out = sys.stdout.buffer
    for part in encode(sets):
        out.write(part)
    out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
