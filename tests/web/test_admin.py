"""The admin dashboard in-process: sign-in, mirror management, users, audit log."""

from __future__ import annotations

import re

from tests.web import admin_fixtures
from tests.web.admin_fixtures import PASSWORD, Admin

admin = admin_fixtures.admin  # the fixture

VALID = {
    "name": "new-mirror",
    "https_url": "https://new.example.org/pub/",
    "country": "FR",
    "capacity": "500",
    "contact": "ops@new.example.org",
    "enabled": "true",
}


async def test_sign_in_sets_a_safe_cookie_and_sign_out_ends_it(admin: Admin) -> None:
    r = await admin.client.get("/-/admin/mirrors?status=up")
    assert r.status_code == 303
    assert r.headers["location"] == "/-/admin/login?next=%2F-%2Fadmin%2Fmirrors%3Fstatus%3Dup"
    r = await admin.login("alice")
    assert r.status_code == 303 and r.headers["location"] == "/-/admin/mirrors"
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/-/admin" in cookie
    assert "max-age=43200" in cookie and "secure" not in cookie  # plain HTTP here
    page = await admin.client.get("/-/admin/mirrors")
    assert page.status_code == 200 and "alice" in page.text
    assert page.headers["cache-control"] == "no-store"
    r = await admin.post("/-/admin/logout")
    assert r.status_code == 303
    assert (await admin.client.get("/-/admin/mirrors")).status_code == 303


async def test_wrong_password_and_unknown_user_get_the_same_answer(admin: Admin) -> None:
    bad_password = await admin.login("alice", "wrong password!")
    unknown = await admin.login("mallory", PASSWORD)
    assert bad_password.status_code == unknown.status_code == 401
    text = re.compile(r'<p class="notice error" role="alert">([^<]*)</p>')
    assert text.findall(bad_password.text) == text.findall(unknown.text) != []


async def test_next_parameter_cannot_leave_the_dashboard(admin: Admin) -> None:
    for target in ("https://evil.example/", "//evil.example/", "/-/admin/../../x", "/\\evil"):
        token = await admin.csrf()
        r = await admin.client.post(
            "/-/admin/login",
            data={"username": "alice", "password": PASSWORD, "csrf": token, "next": target},
        )
        assert r.headers["location"] == "/-/admin/mirrors", target
        await admin.post("/-/admin/logout")


async def test_https_behind_a_trusted_proxy_gets_a_secure_cookie(db_url: str) -> None:
    from tests.web.admin_fixtures import admin_client, make_settings, seed

    settings = make_settings(db_url, trusted_proxies="192.0.2.0/24")
    await seed(settings)
    async with admin_client(settings) as env:
        r = await env.client.get("/-/admin/login", headers={"x-forwarded-proto": "https"})
        assert "secure" in r.headers["set-cookie"].lower()
        r = await env.client.get("/-/admin/login")
        assert "secure" not in r.headers["set-cookie"].lower()


async def test_register_with_errors_then_valid(admin: Admin) -> None:
    await admin.login("alice")
    bad = {
        **VALID,
        "https_url": "https://user@new.example.org/pub/",
        "country": "XX",
        "latitude": "95",
    }
    r = await admin.post("/-/admin/mirrors/new", bad, page="/-/admin/mirrors/new")
    assert r.status_code == 400
    for field in ("https_url", "country", "latitude"):
        assert f'id="e-{field}"' in r.text, field
    assert 'value="ops@new.example.org"' in r.text  # the user's input is kept
    r = await admin.post("/-/admin/mirrors/new", VALID, page="/-/admin/mirrors/new")
    assert r.status_code == 303
    assert r.headers["location"].startswith("/-/admin/mirrors/new-mirror")
    listing = await admin.client.get("/-/admin/mirrors?country=FR")
    assert "new-mirror" in listing.text and ">one<" not in listing.text
    dup = await admin.post("/-/admin/mirrors/new", VALID, page="/-/admin/mirrors/new")
    assert dup.status_code == 400 and "already exists" in dup.text


async def test_list_filters_and_server_side_sort(admin: Admin) -> None:
    await admin.login("alice")
    await admin.post("/-/admin/mirrors/two/disable")
    names = re.compile(r'<td><a href="/-/admin/mirrors/([^"]+)">')
    asc = names.findall((await admin.client.get("/-/admin/mirrors?sort=name")).text)
    desc = names.findall((await admin.client.get("/-/admin/mirrors?sort=name&dir=desc")).text)
    assert asc == ["one", "two"] and desc == ["two", "one"]
    assert names.findall((await admin.client.get("/-/admin/mirrors?enabled=no")).text) == ["two"]
    assert names.findall((await admin.client.get("/-/admin/mirrors?status=disabled")).text) == [
        "two"
    ]
    assert names.findall((await admin.client.get("/-/admin/mirrors?q=ONE")).text) == ["one"]
    assert (await admin.client.get("/-/admin/mirrors?sort=bogus&dir=x")).status_code == 200


async def test_edit_enable_disable_delete_and_audit(admin: Admin) -> None:
    await admin.login("alice")
    form = (await admin.client.get("/-/admin/mirrors/one/edit")).text
    assert 'value="http://one.example.org/pub/"' in form
    data = {
        "name": "one",
        "http_url": "http://one.example.org/pub/",
        "country": "DE",
        "capacity": "2000",
        "enabled": "true",
    }
    r = await admin.post("/-/admin/mirrors/one/edit", data)
    assert r.status_code == 303, r.text
    r = await admin.post("/-/admin/mirrors/one/disable")
    assert r.headers["location"] == "/-/admin/mirrors/one?notice=disabled"
    detail = await admin.client.get(r.headers["location"])
    assert "Mirror disabled." in detail.text and "badge disabled" in detail.text
    confirm = await admin.client.get("/-/admin/mirrors/one/delete")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.text
    r = await admin.post("/-/admin/mirrors/one/delete")
    assert r.headers["location"] == "/-/admin/mirrors?notice=deleted"
    assert (await admin.client.get("/-/admin/mirrors/one")).status_code == 404
    log = (await admin.client.get("/-/admin/audit")).text
    for action in ("mirror.edit", "mirror.disable", "mirror.remove"):
        assert action in log
    assert "user:alice" in log and "2000" in log


async def test_detail_shows_coverage_scans_probes_and_missing_files(admin: Admin) -> None:
    from datetime import UTC, datetime, timedelta

    from mirrorhub.db.models import (
        MirrorFileDiffRow,
        MirrorRow,
        MirrorScanRow,
        MirrorStateRow,
        OriginFileRow,
        ProbeResultRow,
    )
    from mirrorhub.db.session import create_engine, session_factory

    engine = create_engine(admin.settings.database_url)
    now = datetime.now(UTC)
    async with session_factory(engine)() as s:
        from sqlalchemy import select

        mid = await s.scalar(select(MirrorRow.id).where(MirrorRow.name == "one"))
        assert mid is not None
        for i in range(60):
            s.add(
                OriginFileRow(id=i + 1, path=f"pub/f{i:02}.iso", size=1000, mtime=1, changed_at=1.0)
            )
        s.add(MirrorStateRow(mirror_id=mid, health="up", last_good_scan=10.0, lag_seconds=30.0))
        await s.flush()
        for i in range(55):  # 55 missing: 5 of 60 fresh
            s.add(MirrorFileDiffRow(mirror_id=mid, file_id=i + 1, kind="missing"))
        s.add(
            MirrorScanRow(
                mirror_id=mid,
                started_at=now,
                duration_seconds=2.0,
                method="http",
                ok=False,
                error="listing <b>broke</b>",
            )
        )
        for k in range(4):
            s.add(
                ProbeResultRow(
                    mirror_id=mid,
                    scheme="http",
                    at=now - timedelta(hours=k),
                    ok=k != 2,
                    status=200,
                    latency_ms=10.0 + k,
                )
            )
        await s.commit()
    await engine.dispose()
    await admin.login("olga")
    page = (await admin.client.get("/-/admin/mirrors/one")).text
    assert "8.3 %" in page and "5 of 60 files fresh" in page
    assert "listing &lt;b&gt;broke&lt;/b&gt;" in page
    assert page.count("<svg") >= 2
    assert "pub/f00.iso" in page and "pub/f54.iso" not in page and "Page 1 of 2" in page
    page2 = (await admin.client.get("/-/admin/mirrors/one?page=2")).text
    assert "pub/f54.iso" in page2


async def test_users_page_and_assignment(admin: Admin) -> None:
    await admin.login("alice")
    r = await admin.post(
        "/-/admin/users", {"name": "bad name", "role": "operator", "password": "x"}
    )
    assert r.status_code == 400 and 'class="error"' in r.text
    r = await admin.post(
        "/-/admin/users", {"name": "paul", "role": "operator", "password": PASSWORD}
    )
    assert r.status_code == 303
    r = await admin.post("/-/admin/mirrors/two/operators", {"operator": "paul", "assign": "true"})
    assert r.status_code == 303
    assert "paul" in (await admin.client.get("/-/admin/mirrors/two")).text
    r = await admin.post("/-/admin/users/paul/delete")
    assert r.status_code == 303
    assert "paul" not in (await admin.client.get("/-/admin/users")).text


async def test_location_suggestion_from_geoip(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from mirrorhub.geodb import write_city_db
    from tests.web.admin_fixtures import admin_client, make_settings, seed

    city = tmp_path / "city.mmdb"
    write_city_db(city, [("127.0.0.0/8", "NL", "EU", 52.37, 4.9)])
    settings = make_settings(db_url, geoip_city_db=str(city))
    await seed(settings)
    async with admin_client(settings) as env:
        await env.login("alice")
        data = {"name": "local", "http_url": "http://127.0.0.5:8080/pub/", "enabled": "true"}
        r = await env.post("/-/admin/mirrors/new", data)
        assert r.headers["location"] == "/-/admin/mirrors/local/location?notice=added"
        page = (await env.client.get(r.headers["location"])).text
        assert "127.0.0.5" in page and 'value="NL"' in page and 'value="52.37"' in page
        r = await env.post(
            "/-/admin/mirrors/local/location",
            {
                "country": "NL",
                "continent": "EU",
                "latitude": "52.37",
                "longitude": "4.9",
                "asn": "",
            },
        )
        assert r.headers["location"] == "/-/admin/mirrors/local?notice=location"
        detail = (await env.client.get("/-/admin/mirrors/local")).text
        assert "NL / EU (52.37, 4.9)" in detail
