"""The parent's side of the child processes that read a full build's bulk data (SQLite).

Each child runs one of the stdlib-only scripts :mod:`.file_reader` and :mod:`.diff_reader`
under ``python -I -S`` (no site, no environment, no script directory on the path: ~40 ms
to start, nothing of mirrorhub or SQLAlchemy imported) and has its own GIL: the parent
fills the index while they read. Every way a child can fail raises :class:`ReaderFailed`
with the reason, and the caller reads in-process instead.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator, Sequence

from . import diff_reader, file_reader

DIFF_READER = diff_reader.__file__
FILE_READER = file_reader.__file__
PIPE_BYTES = 1 << 20  # the file reader runs up to ~half a page ahead of the parent


class ReaderFailed(Exception):
    """A child did not deliver (the message says why)."""


class _Child:
    def __init__(self, script: str, *args: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", script, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )

    def _why(self) -> str:
        """Exit status and the last line of standard error, once the child is gone."""
        code = self._proc.poll()
        if code is None:
            return "still running"
        err = b""
        if self._proc.stderr is not None:
            with contextlib.suppress(OSError, ValueError):
                err = self._proc.stderr.read()
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
        return f"exit status {code}: {tail[0]}".rstrip(": ")

    def stop(self) -> None:
        """Ends the child if it still runs and releases its pipes (idempotent)."""
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdout, self._proc.stderr):
            if stream is not None:
                stream.close()


class DiffProcess(_Child):
    """The differences, grouped and converted (one result at the end)."""

    def __init__(self, database: str, mirror_ids: Sequence[int]) -> None:
        super().__init__(DIFF_READER, database, ",".join(str(m) for m in mirror_ids))

    def result(self, timeout: float) -> diff_reader.DiffSets:
        """Waits for the child (blocking: call it in a thread)."""
        try:
            out, err = self._proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ReaderFailed(f"no answer within {timeout:g} s") from None
        if self._proc.returncode != 0:
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            raise ReaderFailed(f"exit status {self._proc.returncode}: {tail[0]}")
        try:
            return diff_reader.decode(out)
        except ValueError as exc:
            raise ReaderFailed(f"unreadable result: {exc}") from exc


class FileProcess(_Child):
    """The origin files, a page at a time."""

    def __init__(self, database: str) -> None:
        super().__init__(FILE_READER, database)
        assert self._proc.stdout is not None
        with contextlib.suppress(AttributeError, OSError):  # Linux only; a bigger pipe helps
            import fcntl

            fcntl.fcntl(self._proc.stdout.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._pages: Iterator[list[file_reader.Row]] | None = None
        self.version: int | None = None

    def next_page(self) -> list[file_reader.Row] | None:
        """The next page of files, None after the last (blocking: call it in a thread)."""
        try:
            if self._pages is None:
                assert self._proc.stdout is not None
                reader = file_reader.PageReader(self._proc.stdout)
                self.version, self._pages = reader.version, reader.pages()
            return next(self._pages, None)
        except (EOFError, ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
            if self._proc.poll() is None:
                self._proc.kill()
                self._proc.wait()
            why = self._why()
            self.stop()
            raise ReaderFailed(f"{exc} ({why})") from exc

    def finish(self, timeout: float) -> None:
        """After the last page: the child must end well."""
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise ReaderFailed(f"did not end within {timeout:g} s") from None
        if self._proc.returncode != 0:
            raise ReaderFailed(self._why())
