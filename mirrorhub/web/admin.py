"""The admin dashboard under /-/admin: sign-in, mirrors, users, audit log.

Plumbing (cookies, CSRF, who may do what) is in :mod:`admin_core`; mirror pages in
:mod:`admin_mirrors`. Every route here except the sign-in page needs a signed-in user.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from mirrorhub import audit, auth, users
from mirrorhub.errors import Conflict, NotFound, ValidationError
from mirrorhub.web.admin_core import PREFIX, AdminCore, Ctx, client_info, safe_next
from mirrorhub.web.admin_mirrors import MirrorPages, mirror_url
from mirrorhub.web.state import AppState

AUDIT_PAGE = 50
SIGN_IN_FAILED = "Sign-in failed: the user name or password is wrong."
THROTTLED = "Too many failed sign-ins. Wait a few minutes and try again."


class AccountPages:
    def __init__(self, core: AdminCore) -> None:
        self.core = core
        self.state = core.state

    async def index(self, ctx: Ctx) -> Response:
        return self.core.redirect(f"{PREFIX}/mirrors")

    async def login(self, ctx: Ctx) -> Response:
        next_url = safe_next(ctx.request.query_params.get("next") or ctx.value("next") or None)
        if ctx.form is None:
            if ctx.user is not None:
                return self.core.redirect(next_url)
            return self.core.render(ctx, "admin/login.html", {"next": next_url, "error": None})
        address, _https = client_info(ctx.request, self.state)
        name = ctx.value("username")
        error = SIGN_IN_FAILED
        try:
            user = await auth.authenticate(
                self.state.sessions,
                self.state.settings,
                name,
                ctx.value("password"),
                address,
                self.state.clock(),
            )
        except auth.Throttled:
            user, error = None, THROTTLED
        if user is None:
            context = {"next": next_url, "error": error, "username": name}
            return self.core.render(
                ctx, "admin/login.html", context, 429 if error == THROTTLED else 401
            )
        # A new session (and CSRF token) at sign-in: a token planted earlier is worthless.
        ctx.session = auth.new_session(user.user_id, user.epoch)
        ctx.set_session = True
        return self.core.redirect(next_url)

    async def logout(self, ctx: Ctx) -> Response:
        ctx.session = auth.new_session()
        ctx.set_session = True
        return self.core.redirect(f"{PREFIX}/login?notice=signed-out")

    # --- users (admins) ---

    async def users_page(self, ctx: Ctx) -> Response:
        errors: dict[str, str] = {}
        values = {"name": "", "role": "operator"}
        if ctx.form is not None:
            values = {"name": ctx.value("name"), "role": ctx.value("role")}
            try:
                await users.add_user(
                    self.state.sessions,
                    values["name"],
                    ctx.value("password"),
                    values["role"],
                    actor=ctx.actor,
                )
            except ValidationError as exc:
                errors = dict(exc.fields)
            except Conflict:
                errors = {"name": "a user with this name already exists"}
            else:
                return self.core.redirect(f"{PREFIX}/users?notice=user-added")
        found = await users.list_users(self.state.sessions)
        return self.core.render(
            ctx,
            "admin/users.html",
            {"users": found, "errors": errors, "values": values, "roles": users.ROLES},
            400 if errors else 200,
        )

    async def remove_user(self, ctx: Ctx) -> Response:
        name = ctx.request.path_params["name"]
        try:
            target = await users.get_user(self.state.sessions, name)
        except NotFound:
            return self.core.not_found(ctx, "No such user.")
        if ctx.form is None:
            return self.core.render(ctx, "admin/confirm_user_delete.html", {"target": target})
        if target.role == "admin" and await users.count_admins(self.state.sessions) <= 1:
            return self.core.forbidden(ctx, "The last admin cannot be removed.")
        await users.remove_user(self.state.sessions, target.name, actor=ctx.actor)
        return self.core.redirect(f"{PREFIX}/users?notice=user-removed")

    # --- audit log (admins) ---

    async def audit_page(self, ctx: Ctx) -> Response:
        params = ctx.request.query_params
        try:
            page = max(1, int(params.get("page", "1")))
        except ValueError:
            page = 1
        target = params.get("target", "").strip()[:256] or None
        actor = params.get("actor", "").strip()[:128] or None
        filters = {"actor": actor or "", "target": target or ""}
        entries, total = await audit.entries(
            self.state.sessions,
            limit=AUDIT_PAGE,
            offset=(page - 1) * AUDIT_PAGE,
            actor=actor,
            target=target,
        )
        return self.core.render(
            ctx,
            "admin/audit.html",
            {
                "entries": entries,
                "page": page,
                "pages": max(1, -(-total // AUDIT_PAGE)),
                "target": target or "",
                "actor": actor or "",
                "mirror_url": mirror_url,
                "pager_base": f"{PREFIX}/audit?"
                + "".join(f"{k}={quote(v, safe='')}&" for k, v in filters.items() if v),
            },
        )


def routes(state: AppState) -> list[BaseRoute]:
    core = AdminCore(state)
    accounts = AccountPages(core)
    page = core.page
    both = ["GET", "POST"]
    return [
        Route(PREFIX, page(accounts.index)),
        Route(f"{PREFIX}/", page(accounts.index)),
        Route(f"{PREFIX}/login", page(accounts.login, public=True), methods=both),
        Route(f"{PREFIX}/logout", page(accounts.logout), methods=["POST"]),
        Route(f"{PREFIX}/users", page(accounts.users_page, admin_only=True), methods=both),
        Route(
            f"{PREFIX}/users/{{name}}/delete",
            page(accounts.remove_user, admin_only=True),
            methods=both,
        ),
        Route(f"{PREFIX}/audit", page(accounts.audit_page, admin_only=True)),
        *MirrorPages(core).routes(),
    ]
