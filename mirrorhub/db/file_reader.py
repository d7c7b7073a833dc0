"""The origin files of a full build, read by a separate process (SQLite only).

The companion of :mod:`.diff_reader`: reading a million rows through ``sqlite3`` costs the
reading process about 2 s of CPU (a row object per file, six values each) under the GIL
that also fills the index. This script (``python -I -S file_reader.py DATABASE``: standard
library only) reads every file in one read transaction and writes them as columns, a page
at a time, so the parent only splits a few buffers (~0.4 s for 1,000,000 files) and can fill
one page while the next is read.

Output: :data:`HEADER` (magic, index version), then pages: :data:`PAGE_HEADER` (files,
bytes of paths, bytes of checksums), the ids, sizes and mtimes (``array("q")``), the
change times (``array("d")``), the paths (UTF-8, NUL-separated: a path never holds a NUL)
and the SHA-256 hex digests (ASCII, NUL-separated, empty for none). A page of 0 files ends
the output. Exit status 0; anything else (or output ending early) is a failure: the parent
reads the rest of the files itself, after the last whole page it took.
"""

from __future__ import annotations

import gc
import struct
import sys
from array import array
from collections.abc import Iterator
from typing import IO, Any, BinaryIO

MAGIC = b"MHF1"
HEADER = struct.Struct("<4sq")  # magic, version
PAGE_HEADER = struct.Struct("<III")  # files, bytes of paths, bytes of checksums
PAGE = 20_000
FILES = "SELECT id, path, size, mtime, sha256, changed_at FROM origin_files ORDER BY id"
VERSION = "SELECT version FROM index_version WHERE id = 1"

# (file id, path, size, mtime, sha256 hex or None, changed_at): mirrorhub.index.FileTuple
Row = tuple[int, str, int, int, str | None, float]


def encode_page(rows: list[tuple[Any, ...]]) -> list[bytes]:
    ids, paths, sizes, mtimes, shas, changed = zip(*rows, strict=True)
    text = "\0".join(paths).encode()
    digests = "\0".join([s or "" for s in shas]).encode("ascii")
    return [
        PAGE_HEADER.pack(len(rows), len(text), len(digests)),
        array("q", ids).tobytes(),
        array("q", sizes).tobytes(),
        array("q", mtimes).tobytes(),
        array("d", changed).tobytes(),
        text,
        digests,
    ]


def read(database: str, out: BinaryIO) -> None:
    import sqlite3

    conn = sqlite3.connect(f"file:{database}?mode=ro", uri=True, isolation_level=None, timeout=30)
    try:
        conn.execute("PRAGMA query_only = 1")
        conn.execute("BEGIN")  # one snapshot for the version and every file
        row = conn.execute(VERSION).fetchone()
        out.write(HEADER.pack(MAGIC, int(row[0]) if row and row[0] is not None else 0))
        cursor = conn.execute(FILES)
        while rows := cursor.fetchmany(PAGE):
            out.writelines(encode_page(rows))
        out.write(PAGE_HEADER.pack(0, 0, 0))
        conn.execute("COMMIT")
    finally:
        conn.close()
    out.flush()


class PageReader:
    """The parent's side: the version, then each page as rows (ValueError if malformed,
    EOFError if the output ends early)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        magic, self.version = HEADER.unpack(self._read(HEADER.size))
        if magic != MAGIC:
            raise ValueError(f"bad magic {magic!r}")

    def _read(self, size: int) -> bytes:
        data = self._stream.read(size)
        if len(data) != size:
            raise EOFError(f"output ended after {len(data)} of {size} bytes")
        return data

    def pages(self) -> Iterator[list[Row]]:
        while True:
            files, text_size, digest_size = PAGE_HEADER.unpack(self._read(PAGE_HEADER.size))
            if not files:
                return
            columns = []
            for code in "qqqd":
                part = array(code)
                part.frombytes(self._read(part.itemsize * files))
                columns.append(part.tolist())
            ids, sizes, mtimes, changed = columns
            paths = self._read(text_size).decode().split("\0")
            shas = [s or None for s in self._read(digest_size).decode("ascii").split("\0")]
            if len(paths) != files or len(shas) != files:
                raise ValueError("a page's columns differ in length")
            yield list(zip(ids, paths, sizes, mtimes, shas, changed, strict=True))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: file_reader.py DATABASE", file=sys.stderr)
        return 2
    gc.disable()  # nothing here makes cycles; the collector would rescan every row
    read(argv[0], sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
