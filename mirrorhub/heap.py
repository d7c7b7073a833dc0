"""Give freed heap memory back to the operating system after a large build.

Building the index allocates far more than the index keeps (rows read from the database,
intermediate lists). CPython frees those objects, but glibc's allocator keeps most of the
freed pages mapped, so the process's resident size stays near the build's peak.
``malloc_trim(0)`` returns free pages from every arena. Other C libraries (musl, macOS) lack
it: then nothing happens.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:  # the C library this process already runs on: no search, no subprocess
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return free heap pages to the OS; True when the C library could be asked."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


async def release_free_heap_soon(delay: float = 0.0) -> bool:
    """:func:`release_free_heap` in a worker thread after ``delay`` seconds: on a large
    fragmented heap the call takes tens of milliseconds (71 ms measured at ~700 MB), which
    the event loop should not wait for. ctypes lets go of the GIL for the call, and glibc's
    malloc is thread-safe."""
    if delay > 0:
        await asyncio.sleep(delay)
    return await asyncio.to_thread(release_free_heap)


_later: set[asyncio.Task[bool]] = set()  # the loop keeps only weak references to tasks


def release_free_heap_later(delay: float) -> None:
    """Schedule :func:`release_free_heap_soon` on the running loop and return at once."""
    task = asyncio.get_running_loop().create_task(release_free_heap_soon(delay))
    _later.add(task)
    task.add_done_callback(_later.discard)
