"""Security properties of /-/admin, checked against the routing table itself.

* every route under /-/admin except the sign-in page refuses anonymous users;
* every state-changing request without a valid CSRF token is refused;
* an operator cannot change a mirror that is not assigned to them;
* markup in mirror fields renders as text;
* failed sign-ins are throttled.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from starlette.routing import Route

from mirrorhub import services
from mirrorhub.db.session import create_engine, session_factory
from tests.web import admin_fixtures
from tests.web.admin_fixtures import PASSWORD, Admin

admin = admin_fixtures.admin  # the fixture

PUBLIC = {"/-/admin/login"}
PAYLOAD = "<script>alert(1)</script><img src=x onerror=alert(2)>\"'&"


class _Attributes(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.handlers: list[tuple[str, str]] = []
        self.scripts: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handlers += [(tag, name) for name, _ in attrs if name.startswith("on")]
        if tag == "script":
            self.scripts.append(dict(attrs))


def event_handlers(html: str) -> list[tuple[str, str]]:
    """Elements with on* attributes, as a browser's parser would see them."""
    parser = _Attributes()
    parser.feed(html)
    return parser.handlers


def admin_routes(env: Admin) -> list[tuple[str, set[str]]]:
    """(concrete path, methods) for every /-/admin route in the app's routing table."""
    transport: Any = env.client._transport
    inner = transport.app.inner if hasattr(transport.app, "inner") else None
    assert inner is not None, "the dispatcher exposes its inner Starlette app as .inner"
    found = []
    for route in inner.routes:
        if isinstance(route, Route) and route.path.startswith("/-/admin"):
            path = route.path.replace("{name}", "one")
            found.append((path, set(route.methods or {"GET"})))
    assert len(found) >= 15, found
    return found


async def test_every_admin_route_refuses_anonymous_users(admin: Admin) -> None:
    for path, methods in admin_routes(admin):
        if path in PUBLIC:
            continue
        if "GET" in methods:
            r = await admin.client.get(path)
            assert r.status_code == 303, path
            assert r.headers["location"].startswith("/-/admin/login?next="), path
        token = await admin.csrf()  # even with a valid anonymous CSRF token
        r = await admin.client.post(path, data={"csrf": token, "name": "x", "operator": "oscar"})
        assert r.status_code in (403, 405), (path, r.status_code)
        if "POST" in methods:
            assert r.status_code == 403, path


async def test_every_post_needs_the_csrf_token(admin: Admin) -> None:
    await admin.login("alice")
    good = await admin.csrf("/-/admin/mirrors")
    other = "x" * len(good)
    for path, methods in admin_routes(admin):
        if "POST" not in methods:
            continue
        for data in ({}, {"csrf": ""}, {"csrf": other}):
            r = await admin.client.post(path, data={**data, "name": "zz", "operator": "oscar"})
            assert r.status_code == 403, (path, data, r.status_code)
    # Nothing changed: both mirrors are still there and enabled, alice still signed in.
    listing = await admin.client.get("/-/admin/mirrors?enabled=yes")
    assert listing.status_code == 200 and "/-/admin/mirrors/one" in listing.text


async def test_anonymous_sign_in_needs_csrf_too(admin: Admin) -> None:
    r = await admin.client.post("/-/admin/login", data={"username": "alice", "password": PASSWORD})
    assert r.status_code == 403


async def test_operator_cannot_touch_other_mirrors(admin: Admin) -> None:
    await admin.login("olga")  # assigned to "one" only
    assert (await admin.client.get("/-/admin/mirrors/two")).status_code == 200  # sees it
    assert (await admin.client.get("/-/admin/mirrors/two/edit")).status_code == 403
    for action in ("edit", "disable", "enable", "scan", "probe", "location", "delete", "operators"):
        r = await admin.post(
            f"/-/admin/mirrors/two/{action}",
            {
                "name": "two",
                "http_url": "http://evil.example/",
                "operator": "olga",
                "assign": "true",
            },
        )
        assert r.status_code == 403, action
    for path in ("/-/admin/users", "/-/admin/audit", "/-/admin/mirrors/new"):
        assert (await admin.client.get(path)).status_code == 403, path
    # Her own mirror she may change.
    r = await admin.post("/-/admin/mirrors/one/disable")
    assert r.status_code == 303
    engine = create_engine(admin.settings.database_url)
    try:
        s = session_factory(engine)
        assert (await services.get_mirror(s, "two")).mirror.enabled
        assert (
            await services.get_mirror(s, "two")
        ).mirror.http_url == "http://two.example.org/pub/"
        assert not (await services.get_mirror(s, "one")).mirror.enabled
    finally:
        await engine.dispose()


async def test_markup_in_mirror_fields_is_inert(admin: Admin) -> None:
    await admin.login("alice")
    data = {
        "name": "xss",
        "http_url": "http://xss.example/pub/",
        "contact": PAYLOAD,
        "notes": PAYLOAD + "\nsecond line",
        "enabled": "true",
    }
    r = await admin.post("/-/admin/mirrors/new", data, page="/-/admin/mirrors/new")
    assert r.status_code == 303, r.text
    # The URL validator refuses markup outright; the refusal page shows it escaped.
    bad_url = {**data, "name": "xss2", "http_url": f"http://x.example/{PAYLOAD}/"}
    refused = await admin.post("/-/admin/mirrors/new", bad_url, page="/-/admin/mirrors/new")
    assert refused.status_code == 400
    pages = [
        refused.text,
        (await admin.client.get("/-/admin/mirrors/xss")).text,
        (await admin.client.get("/-/admin/mirrors/xss/edit")).text,
        (await admin.client.get("/-/admin/mirrors?q=%3Cscript%3E")).text,
        (await admin.client.get("/-/admin/audit")).text,
    ]
    for html in pages:
        assert "<script>alert" not in html and "<img src=x" not in html
        assert not event_handlers(html), "an inline event handler"
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in pages[1]


async def test_pages_send_the_csp_and_no_inline_script(admin: Admin) -> None:
    await admin.login("alice")
    for path in (
        "/-/admin/mirrors",
        "/-/admin/mirrors/one",
        "/-/admin/mirrors/new",
        "/-/admin/audit",
    ):
        r = await admin.client.get(path)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp
        assert not re.search(r"<script(?![^>]*\ssrc=)", r.text), path
        assert " style=" not in r.text, path


async def test_failed_sign_ins_are_throttled(admin: Admin) -> None:
    for _ in range(admin.settings.login_max_failures_per_account):
        assert (await admin.login("alice", "wrong password!")).status_code == 401
    r = await admin.login("alice")  # the right password no longer helps
    assert r.status_code == 429 and "Too many failed sign-ins" in r.text
    assert (await admin.client.get("/-/admin/mirrors")).status_code == 303
