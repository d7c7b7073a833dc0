"""Changes written into the live index in place, a few hundred files at a time.

Redirects keep being answered between steps; each file is always seen either before or
after its change, never half-changed. The order is the cautious one: new mirrors get a
position first (so difference sets can name them) but only become selectable, together
with every other mirror's new state (scan time, health), after all files are written. A
mirror whose new scan time arrives late is excluded from files changed meanwhile, never
sent a file it lacks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from mirrorhub.index.snapshot import Index
from mirrorhub.index.source import IndexDelta

STEP_FILES = 100  # files written between two chances for the event loop to answer (~1 ms)


def apply_steps(index: Index, delta: IndexDelta) -> Iterator[int]:
    """Apply ``delta``; yields the number of files written so far after every step.

    Raises NeedsRebuild (before or between steps) when the change cannot be made in place.
    """
    index.reserve_mirrors(delta.mirrors)
    rows = {row[0]: row for row in delta.files}
    groups = {group[0]: group for group in delta.diffs}
    confirmed: dict[int, dict[int, float]] = {}
    for mirror_id, file_id, checked in delta.confirmations:
        confirmed.setdefault(file_id, {})[mirror_id] = checked
    ordered = sorted(delta.file_ids)
    yield 0  # the lookups above take a few ms for 10,000 files
    done = 0
    for file_id in ordered:
        row = rows.get(file_id)
        if row is None:
            index.drop_file(file_id)
        else:
            pos = index.put_file(row)
            group = groups.get(file_id)
            index.put_diffs(pos, group[1] if group else (), group[2] if group else b"")
            index.put_confirmations(pos, confirmed.get(file_id, {}))
        done += 1
        if done % STEP_FILES == 0:
            yield done
    yield done
    index.set_mirrors(delta.mirrors)
    index.version = delta.version
    yield done


def apply_now(index: Index, delta: IndexDelta) -> None:
    """Apply ``delta`` in one go (tests, tools)."""
    for _ in apply_steps(index, delta):
        pass


async def apply_delta(index: Index, delta: IndexDelta) -> int:
    """Apply ``delta``, letting the event loop run between steps; the files written."""
    written = 0
    for written in apply_steps(index, delta):  # noqa: B007 - the last count is the total
        await asyncio.sleep(0)
    return written
