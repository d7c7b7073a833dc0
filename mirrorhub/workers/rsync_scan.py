"""List a mirror over rsync: the thin I/O around :mod:`rsync_list`.

Runs ``rsync --list-only -r --no-motd --timeout=N --contimeout=N rsync://IP:port/module/sub/``
with a clean environment (``TZ=UTC`` so listed times are UTC, ``LC_ALL=C`` so names are printed
in rsync's ``\\#ooo`` escapes rather than in a locale's encoding, and no ``RSYNC_PROXY`` or
``RSYNC_CONNECT_PROG`` from our own environment). Output lines are parsed as they arrive: a
1,000,000-file listing never sits in memory as text.

SSRF guard: the host is resolved and checked by :func:`netpolicy.resolve_checked`, then rsync
gets the IP literal, so it cannot resolve the name again to something else.

Failures become ScanFailed with a short reason first ("unknown module", "connection refused",
"timeout", "listing truncated", ...) and rsync's last error line after it. Exit code 24
("some files vanished") is a success: the files that vanished while the mirror synced are just
not listed, and the compare records them as missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit

from mirrorhub.domain import IPAddress
from mirrorhub.errors import ListingError, ScanFailed
from mirrorhub.workers.http_scan import scope_roots
from mirrorhub.workers.netpolicy import NetPolicyError, resolve_checked
from mirrorhub.workers.rsync_list import EntryKind, parse_rsync_line
from mirrorhub.workers.seen import SeenFile

DEFAULT_PORT = 873
LINE_LIMIT = 1024 * 1024  # bytes in one output line; a longer one is garbage
STDERR_KEEP = 8192  # bytes of rsync's stderr kept for the error message


@dataclass(frozen=True, slots=True)
class RsyncTarget:
    host: str
    port: int
    path: str  # "module/sub/", always ending in "/"


@dataclass(slots=True)
class RsyncResult:
    files: list[SeenFile] = field(default_factory=list)
    entries: int = 0  # lines read, directories included
    address: str = ""  # the IP rsync connected to


def parse_rsync_url(url: str) -> RsyncTarget:
    parts = urlsplit(url)
    if parts.scheme.lower() != "rsync" or not parts.hostname:
        raise ScanFailed(f"not an rsync URL: {url!r}")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ScanFailed(f"bad port in {url!r}") from exc
    path = unquote(parts.path).strip("/")
    if not path:
        raise ScanFailed(f"the rsync URL names no module: {url!r}")
    return RsyncTarget(parts.hostname, port, path + "/")


def rsync_url_for(address: IPAddress, port: int, path: str) -> str:
    host = f"[{address}]" if address.version == 6 else str(address)
    return f"rsync://{host}:{port}/{quote(path)}"


def classify(returncode: int, stderr: str) -> str:
    """A short reason for a failed rsync run, then rsync's own last error line (pure)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if "@ERROR" in line or line.startswith("rsync")]
    detail = (errors or lines or [f"exit code {returncode}"])[0][:300]
    low = stderr.lower()
    if "unknown module" in low:
        kind = "unknown module"
    elif "connection refused" in low:
        kind = "connection refused"
    elif returncode in (30, 35) or "timed out" in low or "timeout" in low:
        kind = "timeout"
    elif "auth failed" in low or "password" in low:
        kind = "module needs a password"
    elif "max connections" in low:
        kind = "too many connections"
    elif "access denied" in low or "not allowed" in low:
        kind = "access denied"
    elif "no route to host" in low or "network is unreachable" in low:
        kind = "unreachable"
    elif returncode == 23 and "no such file or directory" in low:
        kind = "directory not found"
    elif returncode in (12, 20, 23):
        kind = "listing truncated"
    else:
        kind = f"rsync exit code {returncode}"
    return f"{kind}: {detail}"


def rsync_binary() -> str:
    return shutil.which("rsync") or "/usr/bin/rsync"


def _env() -> dict[str, str]:
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC", "LC_ALL": "C"}


async def run_list(
    url: str,
    on_line: Callable[[str], None],
    *,
    io_timeout: float,
    deadline: float,
    rsync: str | None = None,
) -> None:
    """Run one ``rsync --list-only`` and pass each output line (without newline) to on_line.

    ``deadline`` is a ``time.monotonic()`` value; past it the process is killed. Raises
    ScanFailed with :func:`classify`'s reason when rsync fails.
    """
    n = str(max(1, round(io_timeout)))
    args = [rsync or rsync_binary(), "--list-only", "-r", "--no-motd"]
    args += [f"--timeout={n}", f"--contimeout={n}", url]
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=_env(),
            limit=LINE_LIMIT,
            start_new_session=True,
        )
    except OSError as exc:
        raise ScanFailed(f"cannot run rsync: {exc}") from exc
    assert proc.stdout is not None and proc.stderr is not None
    stderr_task = asyncio.create_task(_tail(proc.stderr))
    try:
        while True:
            try:
                async with asyncio.timeout_at(_loop_deadline(deadline)):
                    raw = await proc.stdout.readline()
            except TimeoutError as exc:
                raise ScanFailed(
                    f"timeout: rsync listing ran past its time budget ({url})"
                ) from exc
            except ValueError as exc:  # a line longer than LINE_LIMIT
                raise ListingError(f"garbage rsync output: a line over {LINE_LIMIT} bytes") from exc
            if not raw:
                break
            on_line(raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape"))
        try:
            async with asyncio.timeout_at(_loop_deadline(deadline)):
                code = await proc.wait()
                stderr = await stderr_task
        except TimeoutError as exc:
            raise ScanFailed(f"timeout: rsync did not exit in time ({url})") from exc
        if code not in (0, 24):
            raise ScanFailed(classify(code, stderr))
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        stderr_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stderr_task


def _loop_deadline(monotonic_deadline: float) -> float:
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


async def _tail(stream: asyncio.StreamReader) -> str:
    """Drain a stream (so the child never blocks on a full pipe), keeping its last bytes."""
    kept = b""
    while chunk := await stream.read(65536):
        kept = (kept + chunk)[-STDERR_KEEP:]
    return kept.decode("utf-8", "replace")


async def list_rsync(
    rsync_url: str,
    *,
    scope: Sequence[str] = (),
    allow_private: bool = False,
    io_timeout: float = 30.0,
    total_timeout: float = 1800.0,
    max_entries: int = 5_000_000,
    rsync: str | None = None,
) -> RsyncResult:
    """Every file below ``rsync_url`` (only below the scope sub-trees when there is a scope).

    Paths are relative to ``rsync_url``. A scope sub-tree the mirror lacks lists as empty (its
    files are then missing); every other error fails the whole listing.
    """
    deadline = time.monotonic() + total_timeout
    target = parse_rsync_url(rsync_url)
    try:
        addresses = await resolve_checked(
            target.host, target.port, allow_private, resolve_timeout=io_timeout
        )
    except NetPolicyError as exc:
        raise ScanFailed(str(exc)) from exc
    address = addresses[0]
    result = RsyncResult(address=str(address))
    for root in scope_roots(scope):

        def on_line(line: str, root: str = root) -> None:
            result.entries += 1
            if result.entries > max_entries:
                raise ListingError(f"more than {max_entries} entries (endless listing?)")
            entry = parse_rsync_line(line)
            if entry is not None and entry.kind is EntryKind.FILE:
                result.files.append(
                    SeenFile(root + entry.path, entry.size, entry.size, entry.mtime, 1)
                )

        url = rsync_url_for(address, target.port, target.path + root)
        try:
            await run_list(url, on_line, io_timeout=io_timeout, deadline=deadline, rsync=rsync)
        except ScanFailed as exc:
            if root and str(exc).startswith("directory not found"):
                continue
            raise
    return result
