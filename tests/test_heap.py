"""release_free_heap gives freed heap pages back to the OS (glibc, as on Debian)."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

from tests.conftest import require

# In a fresh interpreter: the test process's own heap would blur the figures.
SCRIPT = textwrap.dedent(
    """
    from mirrorhub.heap import release_free_heap

    def rss_mb():
        with open("/proc/self/status") as f:
            return next(int(l.split()[1]) // 1024 for l in f if l.startswith("VmRSS"))

    blocks = [bytes(4000) for _ in range(50_000)]  # ~200 MB from malloc, not obmalloc
    kept = blocks[::64]  # survivors all over the heap: free() alone cannot shrink it
    del blocks
    before = rss_mb()
    asked = release_free_heap()
    print(before, rss_mb(), asked)
    """
)


def test_freed_heap_goes_back_to_the_os() -> None:
    require(platform.libc_ver()[0] == "glibc", "malloc_trim is glibc's (musl, macOS: a no-op)")
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True
    ).stdout
    before, after, asked = out.split()
    assert asked == "True"
    assert int(before) > 150
    assert int(before) - int(after) > 100, (before, after)


def test_the_loop_hands_the_call_to_a_thread() -> None:
    import asyncio
    import threading

    from mirrorhub import heap

    seen: list[str] = []
    real = heap.release_free_heap

    def spy() -> bool:
        seen.append(threading.current_thread().name)
        return real()

    async def run() -> bool:
        heap.release_free_heap = spy  # type: ignore[assignment]
        try:
            return await heap.release_free_heap_soon(0.01)
        finally:
            heap.release_free_heap = real  # type: ignore[assignment]

    # True where the C library has malloc_trim (glibc), False elsewhere: never an error.
    assert asyncio.run(run()) is (heap._malloc_trim() is not None)
    assert seen and seen[0] != threading.main_thread().name
