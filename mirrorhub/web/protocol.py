"""uvicorn's httptools protocol, answering plain redirects without the ASGI round trip.

For the common request — GET or HEAD of a published file that goes to a mirror — the
dispatcher's synchronous ``fast_redirect`` decides while the parser still holds the request,
and the 302 is written to the socket straight away: no task, no ``receive``/``send``
coroutines, and header lines the dispatcher made, and checked as uvicorn would, once per
(client ranking, file, chosen mirror) instead of two regexes per header per request.
Everything else (``/-/``, views, the origin, errors, request bodies, pipelined requests,
a paused socket, upgrades) takes uvicorn's own path unchanged.

This subclasses uvicorn internals (``HttpToolsProtocol`` of the version pinned in
pyproject.toml); tests/web/test_protocol.py holds its answers byte-equal to uvicorn's own.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from mirrorhub.web import wire

_STATUS_302 = b"HTTP/1.1 302 Found\r\n"
_BODY_HEADERS = (b"content-length", b"transfer-encoding")


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


class RedirectProtocol(HttpToolsProtocol):
    """``uvicorn.run(..., http=RedirectProtocol)``; the app must be a mirrorhub Dispatcher
    (anything else is served the ordinary way)."""

    def on_headers_complete(self) -> None:
        fast = getattr(self.app, "fast_redirect", None)
        if fast is None or not self._may_answer_now():
            super().on_headers_complete()
            return
        scope: Any = self.scope
        url = self.url
        query = b""
        if b"?" in url:
            url, _, query = url.partition(b"?")
        if b"%" in url or b"#" in url or not url.startswith(b"/") or not url.isascii():
            super().on_headers_complete()  # uvicorn decodes and checks these
            return
        path = url.decode("ascii")
        if path.startswith("/-/") or path == "/-":
            super().on_headers_complete()
            return
        http_version = self.parser.get_http_version()
        scope["method"] = self.parser.get_method().decode("ascii")
        if http_version != "1.1":
            scope["http_version"] = http_version
        scope["path"] = path
        scope["raw_path"] = url
        scope["query_string"] = query
        lines = fast(scope)
        if lines is None:
            super().on_headers_complete()
            return
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        self._write(lines, keep_alive)
        self.cycle = _ANSWERED  # type: ignore[assignment]
        if not keep_alive:
            self.transport.close()
        self.on_response_complete()

    def _may_answer_now(self) -> bool:
        """Only a body-less request on an idle, writable connection, no limits configured."""
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            return False  # pipelined behind an unfinished response: keep uvicorn's order
        if self.flow.write_paused or self.limit_concurrency is not None:
            return False
        if self.access_log or self.root_path:
            return False  # uvicorn logs each answer / prefixes the path
        if self.parser.should_upgrade() or self.expect_100_continue:
            return False
        return all(name not in _BODY_HEADERS for name, _ in self.headers)

    def _write(self, lines: bytes, keep_alive: bool) -> None:
        """Write the 302 with the answer's ready-made header lines after uvicorn's default
        headers (``date``: renewed every second, so their lines are made once per list)."""
        global _defaults, _default_lines
        defaults = self.server_state.default_headers
        if defaults is not _defaults:
            _defaults, _default_lines = defaults, _STATUS_302 + wire.lines(defaults)
        tail = b"\r\n" if keep_alive else b"connection: close\r\n\r\n"
        self.transport.write(b"".join((_default_lines, lines, tail)))


# uvicorn replaces its default header list when the date changes; the status line and
# that list's lines, for the list last seen.
_defaults: object = None
_default_lines = b""
