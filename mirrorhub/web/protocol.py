"""uvicorn's httptools protocol, answering plain redirects without the ASGI round trip.

For the common request — GET or HEAD of a published file that goes to a mirror — the
dispatcher's synchronous ``fast_redirect`` decides while the parser still holds the request,
and the 302 is written to the socket straight away: no task, no ``receive``/``send``
coroutines, and header lines the dispatcher made, and checked as uvicorn would, once per
(client ranking, file, chosen mirror) instead of two regexes per header per request.
Everything else (``/-/``, views, the origin, errors, request bodies, pipelined requests,
a paused socket, upgrades) takes uvicorn's own path unchanged.

Per request, the direct path also skips two things uvicorn does for every request and a
redirect does not need (about a third of that path's own cost, docs/performance.md):

* the ASGI scope (a dict, the ``asgi`` dict, a copy of the app state) is built only when
  uvicorn's path serves the request; the dispatcher gets a small dict of what it reads;
* the keep-alive timer is not cancelled on every read and armed again after every answer.
  One idle timer per connection is armed after a direct answer and, when it fires, closes
  the connection only if ``timeout_keep_alive`` has passed since the last direct answer and
  no request is under way; otherwise it re-arms for the rest or leaves the connection to
  uvicorn's own timer (a request that goes to ASGI cancels the idle timer first).

A direct answer is not written at once either. The answers made while the loop hands over
what it has read are written together right after (one ``call_soon`` per pass), as
uvicorn's own answers are: they come from tasks, which run after the reads. Written one by
one, each woke the client up on its own; on loopback (wrk, or a proxy on the same host)
the writer pays for that wake-up, and the server sat idle between them (~10 % fewer
redirects per second, docs/performance.md, session 13). Whatever uvicorn writes or closes
itself on this connection (its 400, the end of input, a shutdown) and a closing answer
first write the answers still held, so their order stays.

The headers the direct path and the dispatcher read are kept apart as the parser hands them
over (mirrorhub.web.wire): the body check, a cached client's context and the fused recorder
loop over those only, not over a browser's dozen others.

This subclasses uvicorn internals (``HttpToolsProtocol`` of the version pinned in
pyproject.toml); tests/web/test_protocol.py holds its answers byte-equal to uvicorn's own
and tests the idle timer.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mirrorhub.web import wire

_STATUS_302 = b"HTTP/1.1 302 Found\r\n"
_BODY_HEADERS = (b"content-length", b"transfer-encoding")
_NOTED, _NOTED_HEADERS = wire.NOTED, wire.NOTED_HEADERS
# Looked for as the parser hands over each header: the noted ones, and Connection, whose
# presence is all the keep-alive decision needs to know (see on_headers_complete).
_WATCHED = _NOTED_HEADERS | {b"connection"}
_CLOSE = b"connection: close\r\n\r\n"
# Direct answers held for the end of a pass, at most (see _Replies): twice wrk's 32
# connections, which never reach it (a pass there holds 15 on average).
MOST_HELD = 64
_METHODS = {b"GET": "GET", b"HEAD": "HEAD"}  # a dict lookup costs less than a decode
_NO_PATHS: dict[bytes, str] = {}


class _NoEvent:
    def set(self) -> None:
        pass


class _Answered:
    """Stands in for uvicorn's request cycle after a direct answer: complete, nothing to
    deliver (uvicorn's callbacks look at ``self.cycle``: a complete cycle gets no body and
    no end-of-message, and a lost connection has nobody to wake)."""

    response_complete = True
    message_event = _NoEvent()


_ANSWERED = _Answered()


class _Replies:
    """The direct answers one event loop has made in its current pass, not yet written:
    at most ``MOST_HELD``. A client that pipelines requests and reads no answers would
    otherwise have a whole pass of them held (up to 32 reads of 256 KiB under uvloop);
    written, they fill its transport, whose flow control then sends its next requests
    through uvicorn's path, which stops reading from it."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: list[tuple[asyncio.WriteTransport, bytes]] = []

    def flush(self) -> None:
        if not self.held:
            return
        held, self.held = self.held, []
        for transport, data in held:
            try:  # noqa: SIM105 (contextlib.suppress costs a context manager per answer)
                transport.write(data)
            except RuntimeError:  # uvloop: closed since (the peer left); nobody to answer
                pass


# One per event loop: the servers of a test suite run loops on several threads.
_REPLIES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Replies] = (
    weakref.WeakKeyDictionary()
)


class RedirectProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=RedirectProtocol)``; the app must be a mirrorhub Dispatcher
    (anything else is served the ordinary way)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        fast = getattr(self.app, "fast_redirect", None)
        paths = getattr(self.app, "direct_paths", None)
        direct = not (self.limit_concurrency is not None or self.access_log or self.root_path)
        # None when every request must take uvicorn's path (limits, access log, root path:
        # uvicorn applies those per request).
        self._fast = fast if direct and paths is not None else None
        # The dispatcher's raw paths it has found valid -> their ASGI ``path`` (read only
        # when ``_fast`` is set, which needs them), and what it says of one not there yet.
        self._direct_path = (paths if paths is not None else _NO_PATHS).get
        self._learn_path = getattr(self.app, "learn_direct_path", _NO_PATHS.get)
        # A request has begun and is not answered directly (it may be with uvicorn's path,
        # which then owns the keep-alive timer: the idle timer is cancelled at the hand-off).
        self._busy = False
        self._idle_since = 0.0  # loop time of the last direct answer
        self._idle_timer: asyncio.TimerHandle | None = None
        self._noted: list[tuple[bytes, bytes]] = []  # this request's, see on_header
        self._connection = False  # this request has a Connection header
        self._replies = _REPLIES.setdefault(self.loop, _Replies())

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_idle_timer()
        super().connection_lost(exc)

    # uvicorn's own writes and closes: the answers held for this pass go out before them.

    def eof_received(self) -> None:
        self._replies.flush()  # the transport closes when this returns, after its buffer

    def send_400_response(self, msg: str) -> None:
        self._replies.flush()
        super().send_400_response(msg)

    def shutdown(self) -> None:
        self._replies.flush()
        super().shutdown()

    def on_message_begin(self) -> None:
        self._busy = True
        self._noted = []
        self._connection = False
        if self._fast is None:
            super().on_message_begin()
            return
        self.url = b""
        self.expect_100_continue = False
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        """uvicorn's, and the headers named in ``wire.NOTED_HEADERS`` kept apart too."""
        name = name.lower()
        if name in _WATCHED:
            if name == b"connection":
                self._connection = True
            else:
                if name == b"expect" and value.lower() == b"100-continue":
                    self.expect_100_continue = True
                self._noted.append((name, value))
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        fast = self._fast
        if fast is None:
            super().on_headers_complete()
            return
        # Only a body-less request on an idle, writable connection (checked here, not in a
        # helper: a call per request costs more than these lines).
        cycle = self.cycle
        if (
            (cycle is not None and not cycle.response_complete)  # pipelined behind one
            or self.flow.write_paused
            or self.expect_100_continue
            or self.parser.should_upgrade()
        ):
            self._to_asgi()
            return
        for name, _ in self._noted:
            if name in _BODY_HEADERS:
                self._to_asgi()
                return
        # Only a target whose path the dispatcher found valid and published (as uvicorn's
        # ``raw_path``, so it has no fragment and ``path`` is what uvicorn would decode,
        # and it is not the inner app's ``/-/``). Anything else (an unknown or invalid
        # path, an absolute URL, a fragment, ...) takes uvicorn's path.
        url, _, query = self.url.partition(b"?")  # (url, b"", b"") without a query
        path = self._direct_path(url)
        if path is None:
            path = self._learn_path(url)
        # A fragment after the query goes to uvicorn too: it leaves it out of query_string.
        # ``bytes.find``, not ``in``: CPython 3.11's ``bytes in bytes`` first tries its left
        # side as an integer and formats a TypeError it then drops (~1,800 instructions).
        if path is None or (query and query.find(b"#") >= 0):
            self._to_asgi()
            return
        parser = self.parser
        method = parser.get_method()
        # The keys of uvicorn's scope that the dispatcher and its recorders read (the
        # Recorder contract in mirrorhub.web.redirect), with the values uvicorn would set,
        # and the noted headers (mirrorhub.web.wire). No more: each costs ~150 instructions.
        scope = {
            "method": _METHODS.get(method) or method.decode("ascii"),
            "scheme": self.scheme,
            "path": path,
            "query_string": query,
            "headers": self.headers,
            "client": self.client,
            _NOTED: self._noted,
        }
        lines = fast(scope)
        if lines is None:
            self._to_asgi()
            return
        # uvicorn's ``get_http_version() != "1.0" and should_keep_alive()``. Without a
        # Connection header llhttp keeps only HTTP/1.1 alive, so the version (a str.format
        # in httptools, ~1,800 instructions) is read only when one came; and only now, as
        # uvicorn's path reads it again for a request handed over.
        keep_alive = parser.should_keep_alive()
        if keep_alive and self._connection:
            keep_alive = parser.get_http_version() != "1.0"
        self._write(lines, keep_alive)
        self.cycle = _ANSWERED  # type: ignore[assignment]
        self._busy = False
        if not keep_alive:
            self.transport.close()
            self.server_state.total_requests += 1  # as uvicorn's completion counts it
        elif self.pipeline or self.flow.read_paused:
            # Not seen: both only happen behind an unfinished response, which
            # the checks above refuse; uvicorn's completion would handle them.
            self.on_response_complete()  # counts the request, resumes, starts what waits
        else:
            self.server_state.total_requests += 1
            self._idle_since = self.loop.time()
            if self._idle_timer is None and self.timeout_keep_alive_task is None:
                self._idle_timer = self.loop.call_later(self.timeout_keep_alive, self._idle_check)

    def on_message_complete(self) -> None:
        if self.cycle is _ANSWERED:  # type: ignore[comparison-overlap]
            return  # answered directly: nothing to deliver
        super().on_message_complete()

    def _to_asgi(self) -> None:
        """Hand this request to uvicorn's path: the full scope, then its own callback
        (which also owns the keep-alive timer from here on). The answers held so far are
        written first: that path may answer at once (a refused WebSocket upgrade writes
        its 400 and closes before any task runs)."""
        self._replies.flush()
        self._cancel_idle_timer()
        url, headers, expect = self.url, self.headers, self.expect_100_continue
        super().on_message_begin()  # builds the scope and resets what the parser collected
        self.url, self.headers, self.expect_100_continue = url, headers, expect
        self.scope["headers"] = headers
        super().on_headers_complete()

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self._busy or self.timeout_keep_alive_task is not None:
            return  # a request under way, or uvicorn's timer in charge: it re-arms after
        remaining = self._idle_since + self.timeout_keep_alive - self.loop.time()
        if remaining > 0:
            self._idle_timer = self.loop.call_later(remaining, self._idle_check)
        else:
            self.timeout_keep_alive_handler()

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _write(self, lines: bytes, keep_alive: bool) -> None:
        """The 302 with the answer's ready-made header lines after uvicorn's default headers
        (``date``: renewed every second, so their lines are made once per list), held for
        the end of the loop's pass; a closing answer is written now, after those held."""
        global _defaults, _default_lines
        defaults = self.server_state.default_headers
        if defaults is not _defaults:
            _defaults, _default_lines = defaults, _STATUS_302 + wire.lines(defaults)
        if keep_alive:
            replies = self._replies
            held = replies.held
            held.append((self.transport, b"".join((_default_lines, lines, b"\r\n"))))
            n = len(held)
            if n == 1:
                self.loop.call_soon(replies.flush)
            elif n >= MOST_HELD:
                replies.flush()
        else:
            self._replies.flush()
            self.transport.write(b"".join((_default_lines, lines, _CLOSE)))


# uvicorn replaces its default header list when the date changes; the status line and
# that list's lines, for the list last seen.
_defaults: object = None
_default_lines = b""
