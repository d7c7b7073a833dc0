"""Request-path validation and normalisation (pure).

A published path is stored without its leading "/" (``pub/iso/x.iso``). Anything that could
let a path escape the tree, confuse a URL parser, or name two files at once is refused here,
before the index is consulted.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable
from urllib.parse import quote

from mirrorhub.errors import InvalidPath

MAX_PATH_BYTES = 1024
RESERVED_PREFIX = "-/"  # mirrorhub's own pages, API and assets live under /-/

# Control characters, DEL, backslash, and U+FFFD (what a broken %-escape decodes to).
_FORBIDDEN = re.compile("[\x00-\x1f\x7f\\\\\ufffd]")


def normalize_path(raw: str) -> str:
    """Return ``raw`` (an absolute, already %-decoded request path) without its leading "/".

    A trailing "/" is kept: it marks a directory request. Raises InvalidPath.
    """
    if not raw.startswith("/"):
        raise InvalidPath("path must start with /")
    if len(raw) > MAX_PATH_BYTES or len(raw.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        raise InvalidPath("path too long")
    if _FORBIDDEN.search(raw):
        raise InvalidPath("control character, backslash or bad encoding in path")
    path = raw[1:]
    if "//" in raw:
        raise InvalidPath("empty path segment")
    body = path[:-1] if path.endswith("/") else path
    if body:
        for segment in body.split("/"):
            if segment in (".", ".."):
                raise InvalidPath("relative path segment")
    return path


def is_reserved(path: str) -> bool:
    return path.startswith(RESERVED_PREFIX) or path == "-"


def quote_path(path: str) -> str:
    """Percent-encode a published path for use after a base URL ending in "/".

    Only "/" and RFC 3986 unreserved characters stay literal, so the result can never change
    the host of the base URL ("@", ":", "?" and "#" are all escaped).
    """
    return quote(path, safe="/")


def parent_dirs(path: str) -> list[str]:
    """The directories that contain ``path``, as published paths ending in "/"."""
    parts = path.split("/")[:-1]
    return ["/".join(parts[: i + 1]) + "/" for i in range(len(parts))]


def name_matcher(patterns: Iterable[str]) -> Callable[[str], bool] | None:
    """Whether a file *name* (no directory) matches any of the shell ``patterns``; None
    when there are none. Used for MIRRORHUB_ORIGIN_ONLY_PATTERNS.

    Exact names, ``prefix*`` and ``*suffix`` (all the defaults) are set lookups and
    ``str.startswith``/``endswith`` calls: a million names are checked at every full index
    build, and one regex of every pattern costs three times as much. The rest is a regex.
    """
    exact: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    others: list[str] = []
    for p in patterns:
        if not any(c in p for c in "*?["):
            exact.add(p)
        elif p.endswith("*") and not any(c in p[:-1] for c in "*?["):
            prefixes.append(p[:-1])
        elif p.startswith("*") and not any(c in p[1:] for c in "*?["):
            suffixes.append(p[1:])
        else:
            others.append(fnmatch.translate(p))
    if not (exact or prefixes or suffixes or others):
        return None
    starts, ends = tuple(prefixes), tuple(suffixes)
    rest = re.compile("|".join(others)).match if others else None

    def matches(name: str) -> bool:
        return (
            name in exact
            or name.startswith(starts)
            or name.endswith(ends)
            or (rest is not None and rest(name) is not None)
        )

    return matches
