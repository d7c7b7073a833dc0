"""Helpers shared by the scale-out tests: `mirrorhub` subprocesses and database peeks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import text

from mirrorhub.db.session import create_engine
from tests.servers import wait_for_port

T = TypeVar("T")


def base_env(db_url: str, **settings: str) -> dict[str, str]:
    """The caller's environment without MIRRORHUB_*, plus ``settings`` (MIRRORHUB_ names)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MIRRORHUB_")}
    env["MIRRORHUB_DATABASE_URL"] = db_url
    env["MIRRORHUB_ALLOW_PRIVATE_MIRRORS"] = "true"
    env.update({f"MIRRORHUB_{k.upper()}": v for k, v in settings.items()})
    return env


def cli(env: Mapping[str, str], *args: str, check: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mirrorhub", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


_BATCH = """
import json, sys
from mirrorhub.cli import main
for argv in json.loads(sys.argv[1]):
    code = main(argv)
    if code:
        sys.exit(f"mirrorhub {' '.join(argv)}: exit {code}")
"""


def cli_batch(env: Mapping[str, str], *commands: Sequence[str]) -> str:
    """Run several ``mirrorhub`` commands in one interpreter, in order, stopping at the first
    that fails (interpreter start-up is most of a command's time on a busy machine)."""
    done = subprocess.run(
        [sys.executable, "-c", _BATCH, json.dumps([list(c) for c in commands])],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, (commands, done.stdout, done.stderr)
    return done.stdout


@contextlib.contextmanager
def mirrorhub_process(
    args: list[str], env: Mapping[str, str], log: Path, port: int | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``mirrorhub ARGS``; stop it with SIGTERM at the end and require a clean exit
    (unless the test killed it)."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mirrorhub", *args],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        failed = False
        try:
            if port is not None:
                wait_for_port("127.0.0.1", port, proc, timeout=30)
            yield proc
        except BaseException:
            failed = True  # report the test's own failure, not the teardown's
            raise
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    if not failed:
                        raise AssertionError(f"{args[0]} did not stop within 20 s") from None
                # uvicorn re-raises the SIGTERM it handled once shut down cleanly.
                if not failed:
                    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]


def wait_until(check: Callable[[], T], timeout: float, what: str) -> tuple[T, float]:
    """Poll ``check`` until it returns something true; return it and the seconds it took."""
    start = time.monotonic()
    last: Any = None
    while time.monotonic() - start < timeout:
        with contextlib.suppress(Exception):
            last = check()
            if last:
                return last, time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


def query(db_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    """Run one SQL statement on a fresh connection; rows as tuples."""

    async def run() -> list[tuple[Any, ...]]:
        engine = create_engine(db_url)
        try:
            async with engine.begin() as conn:
                result = await conn.execute(text(sql), params)
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            await engine.dispose()

    return asyncio.run(run())


def pg_host_port(db_url: str) -> tuple[str, int, str]:
    """(host, port, rest) of a ``postgresql://user@host:port/db`` URL."""
    scheme, _, rest = db_url.partition("://")
    auth, _, hostpart = rest.rpartition("@")
    hostport, _, dbname = hostpart.partition("/")
    host, _, port = hostport.partition(":")
    return host, int(port or 5432), f"{scheme}://{auth + '@' if auth else ''}{{}}/{dbname}"


def via_proxy(db_url: str, port: int) -> str:
    """``db_url`` pointed at a proxy on 127.0.0.1:``port``."""
    return pg_host_port(db_url)[2].format(f"127.0.0.1:{port}")
