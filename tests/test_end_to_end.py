"""End to end: `mirrorhub serve` (with in-process workers) under uvicorn, real mirrors.

Two nginx mirrors and one rsync+nginx mirror on distinct loopback addresses serve copies of
an origin tree that differ in known ways; clients at three test addresses (through a trusted
proxy header) get redirected; following a redirect yields the origin's exact bytes. Then the
origin changes a file, a mirror goes away and comes back, and the dispatcher follows. Runs
on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from mirrorhub.geodb import write_asn_db, write_city_db
from tests.servers import free_port, make_tree, nginx_autoindex, rsync_daemon, wait_for_port

T0 = 1_700_000_000
BERLIN, PARIS, NEW_YORK = "192.0.2.10", "198.51.100.10", "203.0.113.10"


def blob(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


ORIGIN = {
    "pub/a.iso": (blob(1, 300_000), T0),
    "pub/b.iso": (blob(2, 200_000), T0),
    "pub/c.iso": (blob(3, 150_000), T0),
    "pub/Release": (blob(4, 20_000), T0),
    "other/d.iso": (blob(5, 100_000), T0),
    "project/trace/mirrorhub": (f"{T0}\n".encode(), T0),
}


def wait_until(
    check: Callable[[], Any], timeout: float, what: str, state: Callable[[], Any] = lambda: None
) -> float:
    """Poll ``check`` until it returns something true; return the seconds it took.

    On a time-out the assertion shows ``state()`` (e.g. the decision) to say what was seen.
    """
    start = time.monotonic()
    last: Any = None
    while time.monotonic() - start < timeout:
        with contextlib.suppress(httpx.HTTPError, ValueError, KeyError):
            last = check()
            if last:
                return time.monotonic() - start
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}: {state()!r}")


class Dispatcher:
    def __init__(self, url: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=10)

    def get(self, path: str, client: str, **kw: Any) -> httpx.Response:
        return self.http.get(path, headers={"x-forwarded-for": client}, **kw)

    def decision(self, path: str, client: str) -> dict[str, Any]:
        body: dict[str, Any] = self.get(path + "?json", client).json()
        return body

    def chosen(self, path: str, client: str) -> str | None:
        d = self.decision(path, client)
        return d["chosen"]["mirror"] if d["chosen"] else None

    def reasons(self, path: str, client: str) -> dict[str, str]:
        return {e["mirror"]: e["reason"] for e in self.decision(path, client)["excluded"]}


@contextlib.contextmanager
def serve(env: dict[str, str], port: int, log: Path) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mirrorhub", "serve", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for_port("127.0.0.1", port, timeout=30)
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                # By design at most ~20 s: jobs in flight get 10 s, the final statistics
                # flush another 10 s; more than that is a hang.
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError("the dispatcher did not stop within 30 s") from None
    assert proc.returncode == 0, log.read_text()[-3000:]


def cli(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mirrorhub", *args], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_dispatcher_with_workers_end_to_end(db_url: str, tmp_path: Path) -> None:
    origin = make_tree(tmp_path / "origin", ORIGIN)
    full = make_tree(tmp_path / "berlin", ORIGIN)
    paris_tree = {k: v for k, v in ORIGIN.items() if k != "pub/b.iso"}
    paris_tree["pub/c.iso"] = (blob(30, 140_000), T0 - 3600)  # an older, different copy
    paris = make_tree(tmp_path / "paris", paris_tree)
    ny = make_tree(tmp_path / "ny", {k: v for k, v in ORIGIN.items() if k.startswith("pub/")})

    geo = tmp_path / "geo"
    geo.mkdir()
    write_city_db(
        geo / "city.mmdb",
        [
            ("192.0.2.0/24", "DE", "EU", 52.52, 13.40),
            ("198.51.100.0/24", "FR", "EU", 48.86, 2.35),
            ("203.0.113.0/24", "US", "NA", 40.71, -74.01),
        ],
    )
    write_asn_db(geo / "asn.mmdb", [("192.0.2.0/24", 64500, "Example")])
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIRRORHUB_")},
        "MIRRORHUB_DATABASE_URL": db_url,
        "MIRRORHUB_ORIGIN_DIR": str(origin),
        "MIRRORHUB_GEOIP_CITY_DB": str(geo / "city.mmdb"),
        "MIRRORHUB_GEOIP_ASN_DB": str(geo / "asn.mmdb"),
        "MIRRORHUB_TRUSTED_PROXIES": "127.0.0.1",
        "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true",
        "MIRRORHUB_MIN_REDIRECT_SIZE": "10000",
        "MIRRORHUB_INDEX_REFRESH_SECONDS": "0.3",
        "MIRRORHUB_PROBE_INTERVAL": "0.5",
        "MIRRORHUB_PROBE_CONNECT_TIMEOUT_SECONDS": "0.5",
        "MIRRORHUB_PROBE_TIMEOUT_SECONDS": "1",
        "MIRRORHUB_RECHECK_INTERVAL": "1",
        "MIRRORHUB_ORIGIN_WATCH_SECONDS": "0.3",
    }
    with contextlib.ExitStack() as stack:
        berlin_url = stack.enter_context(
            nginx_autoindex(full, "127.0.0.2", workdir=tmp_path / "n2")
        )
        paris_url = stack.enter_context(
            nginx_autoindex(paris, "127.0.0.3", workdir=tmp_path / "n3")
        )
        ny_url = stack.enter_context(nginx_autoindex(ny, "127.0.0.4", workdir=tmp_path / "n4"))
        ny_rsync = stack.enter_context(
            rsync_daemon({"pub": ny}, "127.0.0.4", workdir=tmp_path / "r4")
        )
        cli(env, "mirror", "add", "berlin", "--http", berlin_url, "--country", "DE",
            "--lat", "52.52", "--lon", "13.40", "--capacity", "1000")  # fmt: skip
        cli(env, "mirror", "add", "paris", "--http", paris_url, "--country", "FR",
            "--lat", "48.86", "--lon", "2.35")  # fmt: skip
        cli(env, "mirror", "add", "newyork", "--http", ny_url, "--rsync", ny_rsync + "pub/",
            "--country", "US", "--lat", "40.71", "--lon", "-74.01", "--scope", "pub/")  # fmt: skip
        # The rsync module holds the tree from pub/ down: its base URL is the mirror's root.
        url = stack.enter_context(serve(env, free_port("127.0.0.1"), tmp_path / "serve.log"))
        d = Dispatcher(url)
        stack.callback(d.http.close)

        # Scans and probes run in-process; wait until each client gets its own mirror.
        took = wait_until(
            lambda: (
                d.chosen("/pub/a.iso", BERLIN) == "berlin"
                and d.chosen("/pub/a.iso", PARIS) == "paris"
                and d.chosen("/pub/a.iso", NEW_YORK) == "newyork"
            ),
            60,
            "first scans",
        )
        print(f"first scans and probes: {took:.1f} s")

        # Following a redirect gives the origin's exact bytes.
        r = d.get("/pub/a.iso", PARIS, follow_redirects=True)
        assert r.status_code == 200 and r.content == ORIGIN["pub/a.iso"][0]
        assert r.history[0].status_code == 302
        assert r.history[0].headers["location"] == paris_url + "pub/a.iso"

        # Missing or outdated copies are never chosen, whatever the draw.
        for _ in range(30):
            assert d.get("/pub/b.iso", PARIS).headers["x-mirrorhub-mirror"] != "paris"
            assert d.get("/pub/c.iso", PARIS).headers["x-mirrorhub-mirror"] != "paris"
            assert d.get("/other/d.iso", NEW_YORK).headers["x-mirrorhub-mirror"] != "newyork"
        assert d.reasons("/pub/b.iso", PARIS)["paris"] == "missing"
        assert d.reasons("/pub/c.iso", PARIS)["paris"] == "outdated"
        assert d.reasons("/other/d.iso", NEW_YORK)["newyork"] == "out of scope"

        # Repository metadata comes from the origin (streamed: no MIRRORHUB_ORIGIN_URL).
        r = d.get("/pub/Release", BERLIN)
        assert r.status_code == 200 and r.content == ORIGIN["pub/Release"][0]
        assert r.headers["x-mirrorhub-origin"] == "matches an origin-only pattern"

        # The origin publishes a new a.iso; only berlin has synced it so far.
        new = blob(11, 310_000)
        for tree in (origin, full):
            (tree / "pub/a.iso").write_bytes(new)
            os.utime(tree / "pub/a.iso", (T0 + 600, T0 + 600))
        # The trace file says when the publish happened (now); berlin copies it as well.
        for tree in (full, origin):  # the origin last: its trace starts the origin scan
            (tree / "project/trace/mirrorhub").write_text(f"{int(time.time())}\n")
        took = wait_until(
            lambda: (
                d.chosen("/pub/a.iso", PARIS) == "berlin"
                and d.chosen("/pub/a.iso", NEW_YORK) == "berlin"
            ),
            30,
            "the origin change to reach the dispatcher",
            lambda: (d.decision("/pub/a.iso", PARIS), d.http.get("/-/health").json()),
        )
        print(f"origin change -> fresh mirror in rotation: {took:.1f} s")
        assert d.reasons("/pub/a.iso", PARIS)["paris"] == "stale"
        assert d.get("/pub/a.iso", PARIS, follow_redirects=True).content == new
        digest = hashlib.sha256(new).digest()
        assert d.get("/pub/a.iso", BERLIN).headers["digest"] == "SHA-256=" + (
            base64.b64encode(digest).decode()
        )


def test_mirror_down_and_back(db_url: str, tmp_path: Path) -> None:
    origin = make_tree(tmp_path / "origin", ORIGIN)
    mirror = make_tree(tmp_path / "m", ORIGIN)
    other = make_tree(tmp_path / "o", ORIGIN)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MIRRORHUB_")},
        "MIRRORHUB_DATABASE_URL": db_url,
        "MIRRORHUB_ORIGIN_DIR": str(origin),
        "MIRRORHUB_ALLOW_PRIVATE_MIRRORS": "true",
        "MIRRORHUB_MIN_REDIRECT_SIZE": "10000",
        "MIRRORHUB_INDEX_REFRESH_SECONDS": "0.3",
        "MIRRORHUB_PROBE_INTERVAL": "0.5",
        "MIRRORHUB_PROBE_CONNECT_TIMEOUT_SECONDS": "0.5",
        "MIRRORHUB_PROBE_TIMEOUT_SECONDS": "1",
    }
    port = free_port("127.0.0.5")
    with contextlib.ExitStack() as stack:
        other_url = stack.enter_context(
            nginx_autoindex(other, "127.0.0.6", workdir=tmp_path / "n6")
        )
        with nginx_autoindex(mirror, "127.0.0.5", workdir=tmp_path / "n5", port=port) as url:
            cli(env, "mirror", "add", "flaky", "--http", url, "--capacity", "100000")
            cli(env, "mirror", "add", "steady", "--http", other_url, "--capacity", "1")
            dispatcher = stack.enter_context(
                serve(env, free_port("127.0.0.1"), tmp_path / "serve.log")
            )
            d = Dispatcher(dispatcher)
            stack.callback(d.http.close)
            wait_until(lambda: d.chosen("/pub/a.iso", "192.0.2.1") == "flaky", 60, "scans")
        took = wait_until(
            lambda: d.reasons("/pub/a.iso", "192.0.2.1").get("flaky") == "down", 30, "exclusion"
        )
        print(f"mirror stopped -> excluded: {took:.1f} s")
        assert d.chosen("/pub/a.iso", "192.0.2.1") == "steady"
        with nginx_autoindex(mirror, "127.0.0.5", workdir=tmp_path / "n5b", port=port):
            took = wait_until(
                lambda: d.chosen("/pub/a.iso", "192.0.2.1") == "flaky", 30, "recovery"
            )
            print(f"mirror back -> in rotation: {took:.1f} s")
