"""Give freed heap memory back to the operating system after a large build.

Building the index allocates far more than the index keeps (rows read from the database,
intermediate lists). CPython frees those objects, but glibc's allocator keeps most of the
freed pages mapped, so the process's resident size stays near the build's peak.
``malloc_trim(0)`` returns free pages from every arena. Other C libraries (musl, macOS) lack
it: then nothing happens.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        return None
    if trim is not None:
        trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Return free heap pages to the OS; True when the C library could be asked."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
