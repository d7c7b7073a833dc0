"""The dashboard in a real headless Chromium (Debian's, driven by Playwright).

Runs `mirrorhub serve` as a subprocess on SQLite, creates the first admin with the CLI, then
clicks through: sign in, register a mirror (invalid, then valid), find it on the status page,
disable it, read the audit entry, sign out. Screenshots go to test-artifacts/.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import require
from tests.servers import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
PASSWORD = "correct horse battery"
PAYLOAD = "<img src=x onerror=\"document.title='pwned'\"><script>document.title='pwned'</script>"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    env = {
        **os.environ,
        "MIRRORHUB_DATABASE_URL": f"sqlite:///{tmp_path / 'mh.db'}",
        "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true",
        "MIRRORHUB_GEOIP_DIR": str(tmp_path / "geoip"),
    }
    env.pop("MIRRORHUB_CONFIG", None)
    mh = [sys.executable, "-m", "mirrorhub"]
    subprocess.run([*mh, "db", "upgrade"], env=env, check=True, capture_output=True)
    subprocess.run(
        [*mh, "user", "add", "root-admin", "--role", "admin", "--password-stdin"],
        env=env, input=PASSWORD + "\n", text=True, check=True, capture_output=True,
    )  # fmt: skip
    port = free_port("127.0.0.1")
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [*mh, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        wait_for_port("127.0.0.1", port, proc, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    require(Path(CHROMIUM).exists(), f"Chromium not found at {CHROMIUM} (apt install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        require(False, "playwright is not installed (pip install playwright)")
        raise
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            yield page
        finally:
            browser.close()


def fill(page: Any, values: dict[str, str]) -> None:
    for name, value in values.items():
        page.fill(f"#f-{name}", value)


def test_dashboard_in_chromium(server: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    errors: list[str] = []
    with browser_page() as page:
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.goto(f"{server}/-/admin/mirrors/new")
        assert "/-/admin/login" in page.url  # anonymous: sent to sign in
        page.fill("#username", "root-admin")
        page.fill("#password", "wrong password")
        page.click("button[type=submit]")
        assert "user name or password is wrong" in page.text_content("[role=alert]")
        page.fill("#username", "root-admin")
        page.fill("#password", PASSWORD)
        page.click("form[action='/-/admin/login'] button[type=submit]")
        page.wait_for_url("**/-/admin/mirrors/new")

        # Invalid first: reasons next to the fields, input kept.
        fill(page, {"name": "browser-mirror", "https_url": "ftp://nope", "country": "XX",
                    "contact": PAYLOAD})  # fmt: skip
        page.click("form.mirror-form button[type=submit]")
        assert page.text_content("#e-https_url") and "https://" in page.text_content("#e-https_url")
        assert page.text_content("#e-country")
        assert page.input_value("#f-contact") == PAYLOAD
        page.screenshot(path=str(ARTIFACTS / "admin-mirror-form-errors.png"), full_page=True)
        page.set_viewport_size({"width": 360, "height": 800})
        page.screenshot(path=str(ARTIFACTS / "admin-mirror-form-360px.png"), full_page=True)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 380, f"the form scrolls sideways at 360 px ({width} px)"
        page.set_viewport_size({"width": 1200, "height": 900})

        fill(page, {"https_url": "https://127.0.0.9:8443/pub/", "country": "DE",
                    "notes": PAYLOAD})  # fmt: skip
        page.click("form.mirror-form button[type=submit]")
        page.wait_for_url("**/-/admin/mirrors/browser-mirror**")
        # The payload is text in the DOM: no element was created from it, no script ran.
        assert page.title() != "pwned"
        contact = page.locator("td", has_text="document.title").first
        assert contact.text_content() == PAYLOAD
        assert page.locator("main img").count() == 0
        assert page.locator("main script").count() == 0
        page.screenshot(path=str(ARTIFACTS / "admin-mirror-detail.png"), full_page=True)

        # The status page (another feature) shows enabled mirrors.
        response = page.goto(f"{server}/-/status")
        if response is not None and response.status == 200:
            # The page is cached for a few seconds (served stale while it refreshes).
            deadline = time.monotonic() + 20
            while page.locator("text=browser-mirror").count() == 0:
                assert time.monotonic() < deadline, "the new mirror never reached /-/status"
                page.wait_for_timeout(500)
                page.reload()
            page.screenshot(path=str(ARTIFACTS / "status-page.png"), full_page=True)
        else:
            # TODO(lead): /-/status is built by another helper; once it exists this branch
            # goes away and the assertion above always runs.
            page.goto(f"{server}/-/admin/mirrors")
            assert page.locator("a", has_text="browser-mirror").count() == 1

        # Disable it; the list and the audit log say so.
        page.goto(f"{server}/-/admin/mirrors/browser-mirror")
        page.click("button:has-text('Disable')")
        page.wait_for_url("**notice=disabled")
        assert page.locator(".titlebar .badge.disabled").count() == 1
        page.goto(f"{server}/-/admin/audit")
        row = page.locator("tr", has_text="mirror.disable").first
        assert "user:root-admin" in row.text_content()
        assert "browser-mirror" in row.text_content()
        assert page.title() != "pwned"
        page.screenshot(path=str(ARTIFACTS / "admin-audit.png"), full_page=True)

        # JS sorting and filtering enhance the list; without it the server does the work.
        page.goto(f"{server}/-/admin/mirrors")
        page.fill("#q", "nothing-matches")
        assert page.locator("#mirror-table tbody tr:visible").count() == 0

        page.click("form.signout button")
        page.wait_for_url("**/-/admin/login**")
        page.goto(f"{server}/-/admin/audit")
        assert "/-/admin/login" in page.url
    assert not [e for e in errors if "Content Security Policy" in e], errors
