"""Plumbing shared by every /-/admin page: the session cookie, sign-in checks, CSRF, rendering.

Every handler is wrapped by :meth:`AdminCore.page`, which

* reads the signed session cookie (or starts an anonymous one that only carries a CSRF token),
* refuses anonymous users (GET: redirect to the sign-in page; anything else: 403),
* refuses a POST whose ``csrf`` form field does not match the session's token (403),
* refuses non-admins on admin-only pages (403),
* and sets the cookie on the way out when the session changed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from mirrorhub import auth
from mirrorhub.proxies import resolve_client
from mirrorhub.web.state import AppState
from mirrorhub.web.templating import make_templates

COOKIE = "mirrorhub_session"
PREFIX = "/-/admin"
SAFE_METHODS = frozenset({"GET", "HEAD"})
# Where the sign-in page may send the user afterwards: our own admin pages only.
_NEXT = re.compile(r"/-/admin(?:/[A-Za-z0-9._~%/-]*)?(?:\?[A-Za-z0-9._~%=&+-]*)?")

NOTICES = {
    "saved": "Saved.",
    "added": "Mirror registered.",
    "enabled": "Mirror enabled.",
    "disabled": "Mirror disabled.",
    "deleted": "Mirror deleted.",
    "scan": "Scan started in the background; reload this page in a moment.",
    "probe": "Probe started in the background; reload this page in a moment.",
    "location": "Location updated.",
    "unchanged": "Nothing changed.",
    "signed-out": "You are signed out.",
    "user-added": "User created.",
    "user-removed": "User removed.",
    "operators": "Operators updated.",
}


@dataclass
class Ctx:
    """One request as a handler sees it."""

    request: Request
    session: auth.SessionData
    user: auth.SignedIn | None
    form: FormData | None = None
    set_session: bool = False  # write the cookie on the response
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def actor(self) -> str:
        return f"user:{self.user.name}" if self.user else "anonymous"

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.role == "admin"

    def value(self, name: str) -> str:
        """A form field as a string ("" when absent or a file)."""
        raw = self.form.get(name) if self.form is not None else None
        return raw if isinstance(raw, str) else ""


Handler = Callable[[Ctx], Awaitable[Response]]


def safe_next(value: str | None) -> str:
    ok = value and _NEXT.fullmatch(value) and "/." not in value and "//" not in value
    return value if ok and value else f"{PREFIX}/mirrors"


def client_info(request: Request, state: AppState) -> tuple[str, bool]:
    """(client address, request came over HTTPS) after the trusted-proxy rules."""
    peer = request.client.host if request.client else None
    found = resolve_client(peer, request.scope.get("headers", []), state.settings.trusted_proxies)
    https = request.url.scheme == "https" or found.forwarded_proto == "https"
    return str(found.address), https


class AdminCore:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.templates = make_templates()
        self._codec: auth.SessionCodec | None = None

    async def codec(self) -> auth.SessionCodec:
        if self._codec is None:
            key = await auth.signing_key(self.state.sessions, self.state.settings)
            self._codec = auth.SessionCodec(key, self.state.settings.session_max_age_seconds)
        return self._codec

    # --- responses ---

    def render(
        self, ctx: Ctx, template: str, context: Mapping[str, Any], status: int = 200
    ) -> Response:
        notice = NOTICES.get(ctx.request.query_params.get("notice", ""))
        full = {"user": ctx.user, "csrf": ctx.session.csrf, "notice": notice, **context}
        response: Response = self.templates.TemplateResponse(
            ctx.request, template, full, status_code=status
        )
        response.headers["cache-control"] = "no-store"
        return response

    @staticmethod
    def redirect(url: str) -> Response:
        return RedirectResponse(url, status_code=303)

    def forbidden(self, ctx: Ctx, reason: str) -> Response:
        return self.render(ctx, "admin/error.html", {"status": 403, "reason": reason}, 403)

    def not_found(self, ctx: Ctx, reason: str = "Not found.") -> Response:
        return self.render(ctx, "admin/error.html", {"status": 404, "reason": reason}, 404)

    def write_cookie(self, ctx: Ctx, response: Response, codec: auth.SessionCodec) -> None:
        _address, https = client_info(ctx.request, self.state)
        response.set_cookie(
            COOKIE,
            codec.dumps(ctx.session),
            max_age=int(self.state.settings.session_max_age_seconds),
            path=PREFIX,
            secure=https,
            httponly=True,
            samesite="lax",
        )

    # --- the wrapper ---

    def page(self, handler: Handler, *, public: bool = False, admin_only: bool = False) -> Any:
        async def endpoint(request: Request) -> Response:
            codec = await self.codec()
            data = codec.loads(request.cookies.get(COOKIE))
            fresh = data is None
            session = data or auth.new_session()
            user = await auth.session_user(self.state.sessions, data)
            if user is None and session.user_id is not None:
                session, fresh = auth.new_session(), True  # expired epoch: start over
            ctx = Ctx(request, session, user, set_session=fresh)
            response = await self._guarded(ctx, handler, public=public, admin_only=admin_only)
            if ctx.set_session:
                self.write_cookie(ctx, response, codec)
            return response

        return endpoint

    async def _guarded(
        self, ctx: Ctx, handler: Handler, *, public: bool, admin_only: bool
    ) -> Response:
        request = ctx.request
        if request.method not in SAFE_METHODS:
            if not public and ctx.user is None:
                return self.forbidden(ctx, "Sign in first.")
            ctx.form = await request.form()
            if not auth.csrf_ok(ctx.session, ctx.value("csrf")):
                return self.forbidden(
                    ctx, "The form expired or did not come from this site. Reload and try again."
                )
        elif not public and ctx.user is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return self.redirect(f"{PREFIX}/login?next={quote(safe_next(target), safe='')}")
        if admin_only and not ctx.is_admin:
            return self.forbidden(ctx, "Only admins may do this.")
        return await handler(ctx)


__all__ = ["PREFIX", "AdminCore", "Ctx", "client_info", "safe_next"]
