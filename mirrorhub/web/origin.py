"""Answers from the origin: a redirect to MIRRORHUB_ORIGIN_URL, else the local origin tree."""

from __future__ import annotations

import os
from pathlib import Path

from starlette.responses import FileResponse

from mirrorhub.domain import Decision
from mirrorhub.paths import quote_path
from mirrorhub.settings import Settings
from mirrorhub.web.redirect import OriginHandler, Receive, Request, Scope, Send, _plain

_NO_STORE = (b"cache-control", b"private, no-store")


class OriginServer(OriginHandler):
    def __init__(self, settings: Settings) -> None:
        self.origin_url = settings.origin_url
        self.origin_dir = settings.origin_dir.resolve() if settings.origin_dir else None

    async def file(
        self, request: Request, decision: Decision, scope: Scope, receive: Receive, send: Send
    ) -> None:
        reason = decision.origin_reason.value if decision.origin_reason else "origin"
        if self.origin_url is not None:
            await self._redirect(request.path, reason, send)
            return
        local = self._local_file(request.path)
        if local is None:
            # The index knows the file but no origin can serve it: retryable, not a 500.
            body = b"no mirror holds this file now and no origin is configured\n"
            await _plain(send, 503, body, [(b"retry-after", b"60")], head=request.head)
            return
        response = FileResponse(
            local,
            headers={"cache-control": "no-cache", "x-mirrorhub-origin": reason},
        )
        await response(scope, receive, send)

    async def directory(self, request: Request, scope: Scope, receive: Receive, send: Send) -> None:
        if self.origin_url is not None:
            path = (
                request.path
                if request.path.endswith("/") or not request.path
                else request.path + "/"
            )
            await self._redirect(path, "directory", send)
            return
        await _plain(send, 404, b"directory listings are served by the origin\n", head=request.head)

    async def _redirect(self, path: str, reason: str, send: Send) -> None:
        assert self.origin_url is not None
        headers = [
            (b"location", (self.origin_url + quote_path(path)).encode("ascii")),
            _NO_STORE,
            (b"content-length", b"0"),
            (b"x-mirrorhub-origin", reason.encode("ascii")),
        ]
        await send({"type": "http.response.start", "status": 302, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    def _local_file(self, path: str) -> Path | None:
        if self.origin_dir is None:
            return None
        candidate = Path(os.path.realpath(self.origin_dir / path))
        # The path was validated, but a symlink in the tree could still point outside it.
        if not candidate.is_relative_to(self.origin_dir) or not candidate.is_file():
            return None
        return candidate
