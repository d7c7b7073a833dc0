"""``mirrorhub probe``: a round from the command line, against a real loopback server."""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mirrorhub.cli import probe as probe_cli
from mirrorhub.db.models import MirrorRow
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.settings import Settings

TRACE = "project/trace/mirrorhub"
STAMP = str(int(time.time()) - 30).encode()


class _Trace(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        ok = self.path == "/" + TRACE
        body = STAMP if ok else b"no"
        self.send_response(200 if ok else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.2", 0), _Trace)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.2:{httpd.server_address[1]}/"
    httpd.shutdown()
    httpd.server_close()


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="mirrorhub")
    probe_cli.register(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


async def _add(db_url: str, mirrors: dict[str, str]) -> None:
    engine = create_engine(db_url)
    try:
        async with session_factory(engine)() as session, session.begin():
            now = datetime.now(UTC)
            for name, url in mirrors.items():
                session.add(MirrorRow(name=name, http_url=url, created_at=now, updated_at=now))
    finally:
        await engine.dispose()


def test_probe_all_prints_a_table(
    db_url: str, server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = tmp_path / "origin"
    (origin / TRACE).parent.mkdir(parents=True)
    (origin / TRACE).write_bytes(STAMP + b"\n")
    dead = "http://127.0.0.3:9/"
    asyncio.run(_add(db_url, {"good": server, "dead": dead}))
    settings = Settings(
        database_url=db_url,
        origin_dir=origin,
        allow_private_mirrors=True,
        probe_timeout_seconds=1.0,
        probe_connect_timeout_seconds=0.5,
    )
    args = parse(["probe", "--all"])
    assert args.handler(args, settings) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == [
        "MIRROR", "SCHEME", "OK", "STATUS", "LATENCY", "ERROR", "HEALTH", "LAG",
    ]  # fmt: skip
    dead_line = next(line for line in out if line.startswith("dead"))
    assert dead_line.split() == ["dead", "http", "no", "-", "-", "refused", "unknown", "-"]
    good_line = next(line for line in out if line.startswith("good"))
    cells = good_line.split()
    assert cells[:4] == ["good", "http", "yes", "200"] and cells[-3:] == ["up", "0", "s"]
    assert out[-1] == "2 mirror(s) probed"

    args = parse(["probe", "good"])
    assert args.handler(args, settings) == 0
    assert "1 mirror(s) probed" in capsys.readouterr().out


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["probe"], ["probe", "--all", "x"], ["probe", "--concurrency", "x", "m"]):
        with pytest.raises(SystemExit) as info:
            parse(argv)
        assert info.value.code == 2
    args = parse(["probe", "--concurrency", "0", "m"])
    assert args.handler(args, Settings()) == 2
    assert "--concurrency must be at least 1" in capsys.readouterr().err
