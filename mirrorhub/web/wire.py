"""Response header lines as bytes on the wire, checked the way uvicorn checks them.

The dispatcher keeps the header lines of recent 302s ready-made (see
``Dispatcher.fast_redirect``) and mirrorhub.web.protocol writes them without building them
again; both sides use this module so the check happens once, when the lines are made.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

# uvicorn's HEADER_VALUE_RE; tab is allowed in a value, so joining the values with tabs
# checks all of them in one search.
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")


def lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``name: value\r\n`` for each header, unchecked."""
    out: list[bytes] = []
    for name, value in headers:
        out += (name, b": ", value, b"\r\n")
    return b"".join(out)


def header_lines(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """:func:`lines`, or None when a value holds a byte uvicorn would refuse (the caller
    then lets uvicorn answer, and refuse it, the usual way)."""
    if _BAD_VALUE.search(b"\t".join(value for _, value in headers)):
        return None
    return lines(headers)
