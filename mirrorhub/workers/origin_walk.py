"""Walk the origin tree: what the dispatcher can publish, as (path, size, mtime).

Rules (each one is why a file is or is not published):

- Regular files are published under their path relative to the origin directory.
- A symlink to a regular file inside the tree is published as a file with the *target's*
  size and mtime: a published link must resolve, and mirrors copying with ``rsync -L`` or
  serving it over HTTP show the target's attributes.
- Symlinks whose resolved target leaves the tree, dangling or looping symlinks and symlinks to
  directories are skipped. The walk never descends through a symlink, so link loops cannot
  make it spin.
- rsync's in-flight files are skipped: ``.name.XXXXXX`` (rsync's temporary name for a file it
  is receiving: a dot, the name, a dot and six letters/digits) and ``.~tmp~`` (the directory
  of ``--delay-updates``). Other dot-files stay published (``.treeinfo``, ``.discinfo``).
- Special files (FIFOs, sockets, devices) are skipped.
- Paths the dispatcher could not serve are skipped: whatever :func:`mirrorhub.paths.
  normalize_path` refuses (control characters, backslash, over 1024 bytes...), names that are
  not valid UTF-8, and the reserved ``-/`` prefix.
- Unreadable entries are reported and skipped; they carry ``keep=True`` so the scan does not
  delete the rows it can no longer see (a transient permission error must not unpublish a
  sub-tree).
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from typing import NamedTuple

from mirrorhub.errors import InvalidPath
from mirrorhub.paths import is_reserved, normalize_path

RSYNC_DELAY_DIR = ".~tmp~"
_RSYNC_TEMP = re.compile(r"\..+\.[A-Za-z0-9]{6}")


class WalkedFile(NamedTuple):
    """A publishable file as the walk saw it (a NamedTuple: a million of them must be cheap)."""

    path: str  # relative POSIX path, no leading "/"
    size: int
    mtime: int  # POSIX seconds, floored


class Skipped(NamedTuple):
    path: str  # relative path; directories end with "/"
    reason: str
    keep: bool = False  # True: we could not look, so keep what the database knows under it


def is_rsync_temp(name: str) -> bool:
    return name == RSYNC_DELAY_DIR or _RSYNC_TEMP.fullmatch(name) is not None


def unservable_reason(path: str) -> str | None:
    """Why the dispatcher could not serve ``path`` (relative, dirs end in "/"), or None."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    try:
        if normalize_path("/" + path) != path:
            return "path does not normalise to itself"
    except InvalidPath as exc:
        return str(exc)
    if is_reserved(path):
        return "reserved prefix -/"
    return None


def walk_origin(root: str) -> Iterator[WalkedFile | Skipped]:
    """Yield every publishable file under ``root`` and every skipped entry, in no fixed order.

    Iterative and ``os.scandir``-based: one ``stat`` per file, no recursion limit. Raises
    OSError only when ``root`` itself cannot be listed.
    """
    root = os.path.realpath(root)
    inside = root.rstrip(os.sep) + os.sep
    stack = [""]  # relative directory paths: "" or "a/b/"
    while stack:
        rel_dir = stack.pop()
        try:
            entries = os.scandir(os.path.join(root, rel_dir) if rel_dir else root)
        except OSError as exc:
            if not rel_dir:
                raise
            yield Skipped(rel_dir, f"cannot list directory: {exc.strerror}", keep=True)
            continue
        with entries:
            while True:
                try:
                    entry = next(entries)
                except StopIteration:
                    break
                except OSError as exc:
                    yield Skipped(rel_dir, f"listing failed: {exc.strerror}", keep=True)
                    break
                yield from _visit(entry, rel_dir, inside, stack)


def _visit(
    entry: os.DirEntry[str], rel_dir: str, inside: str, stack: list[str]
) -> Iterator[WalkedFile | Skipped]:
    rel = rel_dir + entry.name
    if is_rsync_temp(entry.name):
        yield Skipped(rel, "rsync temporary file")
        return
    try:
        if entry.is_dir(follow_symlinks=False):
            reason = unservable_reason(rel + "/")
            if reason:
                yield Skipped(rel + "/", reason)
            else:
                stack.append(rel + "/")
            return
        reason = unservable_reason(rel)
        if reason:
            yield Skipped(rel, reason)
        elif entry.is_file(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            yield WalkedFile(rel, st.st_size, st.st_mtime_ns // 1_000_000_000)
        elif entry.is_symlink():
            yield _symlink(entry.path, rel, inside)
        else:
            yield Skipped(rel, "special file")
    except FileNotFoundError:
        yield Skipped(rel, "vanished during the walk")
    except OSError as exc:
        yield Skipped(rel, f"cannot stat: {exc.strerror}", keep=True)


def _symlink(full: str, rel: str, inside: str) -> WalkedFile | Skipped:
    target = os.path.realpath(full)
    if not target.startswith(inside):
        return Skipped(rel, "symlink leaves the origin tree")
    try:
        st = os.stat(full)  # follows the link
    except OSError as exc:  # ENOENT dangling, ELOOP loop: neither resolves for a client
        return Skipped(rel, f"symlink does not resolve: {exc.strerror}")
    if stat.S_ISDIR(st.st_mode):
        return Skipped(rel, "symlink to a directory (not followed)")
    if not stat.S_ISREG(st.st_mode):
        return Skipped(rel, "symlink to a special file")
    return WalkedFile(rel, st.st_size, st.st_mtime_ns // 1_000_000_000)
