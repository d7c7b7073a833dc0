"""Two `mirrorhub serve --no-workers` processes on one database pick up a change within 5 s.

A mirror registered and scanned through the CLI against the shared database (what an admin
action on either dispatcher amounts to: a commit that bumps the index version) must be
redirected to by both dispatchers within 5 s. On PostgreSQL the periodic check is set to
60 s, so only LISTEN/NOTIFY can make it; on SQLite (one machine) the periodic check of 1 s
does it.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx

from tests.scaleout.procs import base_env, cli, mirrorhub_process, query, wait_until
from tests.servers import free_port, make_tree, nginx_autoindex

T0 = 1_700_000_000
FILES = {"pub/x.iso": (50_000, T0), "pub/y.iso": (60_000, T0)}


def redirects_to(client: httpx.Client, url: str) -> bool:
    r = client.get("/pub/x.iso")
    return r.status_code == 302 and r.headers["location"] == url + "pub/x.iso"


def test_a_new_mirror_reaches_every_dispatcher_within_5_s(db_url: str, tmp_path: Path) -> None:
    postgres = db_url.startswith("postgresql")
    origin = make_tree(tmp_path / "origin", FILES)
    env = base_env(
        db_url,
        origin_dir=str(origin),
        trace_file="",
        min_redirect_size="0",
        heartbeat_seconds="1",
        index_refresh_seconds="60" if postgres else "1",
    )
    cli(env, "scan-origin")
    with contextlib.ExitStack() as stack:
        url_a = stack.enter_context(
            nginx_autoindex(make_tree(tmp_path / "a", FILES), "127.0.0.2", workdir=tmp_path / "na")
        )
        url_b = stack.enter_context(
            nginx_autoindex(make_tree(tmp_path / "b", FILES), "127.0.0.3", workdir=tmp_path / "nb")
        )
        cli(env, "mirror", "add", "a", "--http", url_a, "--capacity", "1")
        cli(env, "scan", "a")
        clients = []
        for n in (1, 2):
            port = free_port("127.0.0.1")
            stack.enter_context(
                mirrorhub_process(
                    ["serve", "--no-workers", "--no-upgrade", "--port", str(port)],
                    env,
                    tmp_path / f"serve{n}.log",
                    port,
                )
            )
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
            stack.callback(client.close)
            clients.append(client)
        for client in clients:
            wait_until(lambda c=client: redirects_to(c, url_a), 10, "the first index")

        # Register b "through dispatcher 1's side": the CLI on the shared database.
        cli(env, "mirror", "add", "b", "--http", url_b, "--capacity", "1000000")
        cli(env, "scan", "b")
        changed = time.monotonic()
        for n, client in enumerate(clients, 1):
            _, took = wait_until(
                lambda c=client: all(redirects_to(c, url_b) for _ in range(5)), 10, f"#{n}"
            )
            took = time.monotonic() - changed
            print(f"dispatcher {n} redirects to the new mirror {took:.2f} s after the change")
            assert took < 5.0

        # Both dispatchers are listed, each with the database's index version.
        ((version,),) = query(db_url, "SELECT version FROM index_version")
        body, _ = wait_until(
            lambda: (
                (b := clients[0].get("/-/api/workers").json())
                and {p["index_version"] for p in b["processes"]} == {version}
                and b
            ),
            5,
            "both dispatchers in /-/api/workers",
        )
        assert [p["role"] for p in body["processes"]] == ["dispatcher", "dispatcher"]
        health = clients[1].get("/-/health").json()
        assert health["database_ok"] and health["index_version"] == version
