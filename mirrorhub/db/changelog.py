"""The index change log: which files each version bump touched.

Dispatchers read the entries after their own version and re-read only those files
(mirrorhub.db.index_load); an entry without file ids, or a gap, makes them rebuild.
"""

from __future__ import annotations

import itertools
import sys
import time
import zlib
from array import array
from collections.abc import Collection, Sequence

from sqlalchemy import delete, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from .models import IndexChangeRow

KEEP_VERSIONS = 1000  # entries kept; a dispatcher further behind rebuilds
MAX_LISTED_FILES = 200_000  # a wider change is logged as "everything" (a rebuild is cheaper)


def pack_ids(ids: Collection[int]) -> bytes:
    """Sorted ids as the gaps between them, little-endian int64, compressed: neighbouring
    ids (a release's files) become runs of small numbers (100,000 in a row: about 4 KB)."""
    ordered = sorted(ids)
    packed = array("q", [b - a for a, b in itertools.pairwise([0, *ordered])])
    if sys.byteorder == "big":  # pragma: no cover - every machine we run on is little-endian
        packed.byteswap()
    return zlib.compress(packed.tobytes(), 1)


def unpack_ids(data: bytes) -> Sequence[int]:
    packed = array("q")
    packed.frombytes(zlib.decompress(data))
    if sys.byteorder == "big":  # pragma: no cover
        packed.byteswap()
    return list(itertools.accumulate(packed))


async def record(
    session: AsyncSession, version: int, files: Collection[int] | None, now: float | None = None
) -> None:
    """Log what ``version`` changed (``files=None``: anything) and prune old entries."""
    listed = files is not None and len(files) <= MAX_LISTED_FILES
    await session.execute(
        insert(IndexChangeRow).values(
            version=version,
            file_ids=pack_ids(files) if listed and files is not None else None,
            created_at=time.time() if now is None else now,
        )
    )
    if version % 100 == 0:  # pruning now and then is enough
        await session.execute(
            delete(IndexChangeRow).where(IndexChangeRow.version <= version - KEEP_VERSIONS)
        )


async def changed_files(session: AsyncSession, since: int, upto: int) -> frozenset[int] | None:
    """The files changed by versions ``since`` + 1 .. ``upto``; None when the log cannot say
    (an entry is missing or pruned, or one changed too much to list)."""
    rows = (
        await session.execute(
            select(IndexChangeRow.version, IndexChangeRow.file_ids)
            .where(IndexChangeRow.version > since, IndexChangeRow.version <= upto)
            .order_by(IndexChangeRow.version)
        )
    ).all()
    if [version for version, _ in rows] != list(range(since + 1, upto + 1)):
        return None
    found: set[int] = set()
    for _, data in rows:
        if data is None:
            return None
        found.update(unpack_ids(data))
    return frozenset(found)
