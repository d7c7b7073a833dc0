"""What mirrorhub.web.protocol and the dispatcher share about the bytes on the wire.

Response header lines, checked the way uvicorn checks them: the dispatcher keeps the header
lines of recent 302s ready-made (see ``Dispatcher.fast_redirect``) and the protocol writes
them without building them again; both sides use this module so the check happens once, when
the lines are made.

Request headers: of a request's headers, the direct path and the dispatcher with its
recorders read only those named in :data:`NOTED_HEADERS`. The protocol collects them while
the parser hands over each header and passes them apart, in arrival order, under the scope
key :data:`NOTED`. The per-request readers (the protocol's body check, the context of a
client already cached, the fused recorder) loop over those instead of all headers. A browser
sends a dozen, and each cost ~1,200 instructions in those loops (bench/instructions.py: a
request with ten more headers, 112,004 -> 100,246). A scope without that key (uvicorn's own,
for everything the protocol does not answer) is read whole, as are the headers on the rarer
paths (a client seen for the first time, the statistics counter when not fused).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import unquote

NOTED = "mirrorhub.noted_headers"
NOTED_HEADERS = frozenset(
    {
        b"content-length",  # a body: not answered directly
        b"transfer-encoding",
        b"expect",
        b"accept",  # the JSON and Metalink views
        b"range",  # a repeat of a download in the statistics
        b"x-forwarded-for",  # a trusted proxy's client
        b"forwarded",
        b"x-forwarded-proto",
    }
)


def request_path(raw_path: bytes) -> str | None:
    """The ASGI ``path`` uvicorn makes of a request's ``raw_path`` (ASCII, %-escapes
    decoded as UTF-8), or None where it would refuse the request."""
    try:
        path = raw_path.decode("ascii")
    except UnicodeDecodeError:
        return None
    return unquote(path) if "%" in path else path


# The bytes uvicorn's HEADER_VALUE_RE accepts in a value (all but controls other than tab,
# and DEL). Deleting them leaves only refused bytes: ``bytes.translate`` scans in C, ~5
# times faster than a regular-expression search over the ~900 bytes of a 302's values.
_ALLOWED = bytes(b for b in range(256) if not (b <= 0x08 or 0x0A <= b <= 0x1F or b == 0x7F))


def lines(headers: Iterable[tuple[bytes, bytes]]) -> bytes:
    """``name: value\r\n`` for each header, unchecked."""
    out: list[bytes] = []
    for name, value in headers:
        out += (name, b": ", value, b"\r\n")
    return b"".join(out)


def header_lines(headers: Sequence[tuple[bytes, bytes]]) -> bytes | None:
    """:func:`lines`, or None when a value holds a byte uvicorn would refuse (the caller
    then lets uvicorn answer, and refuse it, the usual way)."""
    if b"".join([value for _, value in headers]).translate(None, _ALLOWED):
        return None
    return lines(headers)
