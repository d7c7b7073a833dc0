"""Request-path validation and normalisation (pure).

A published path is stored without its leading "/" (``pub/iso/x.iso``). Anything that could
let a path escape the tree, confuse a URL parser, or name two files at once is refused here,
before the index is consulted.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable
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


def glob_regex(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One compiled regex for shell patterns matched against a file *name* (no directory);
    None when there are no patterns. Used for MIRRORHUB_ORIGIN_ONLY_PATTERNS."""
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(parts)) if parts else None
