"""``mirrorhub scan NAME | --all`` against real loopback servers, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from mirrorhub.cli import main
from mirrorhub.db.session import create_engine, session_factory
from mirrorhub.workers.origin_scan import scan_origin
from tests.servers import listing_server, make_tree, rsync_daemon
from tests.workers.test_mirror_scan import ORIGIN, add_mirror


async def _setup(db_url: str, origin: Path, mirrors: dict[str, dict[str, object]]) -> None:
    engine = create_engine(db_url)
    try:
        sessions = session_factory(engine)
        await scan_origin(sessions, origin)
        for name, columns in mirrors.items():
            await add_mirror(sessions, name, **columns)
    finally:
        await engine.dispose()


@pytest.fixture
def env(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MIRRORHUB_DATABASE_URL", db_url)
    monkeypatch.setenv("MIRRORHUB_ALLOW_PRIVATE_MIRRORS", "true")
    monkeypatch.setenv("MIRRORHUB_SCAN_TIMEOUT_SECONDS", "5")
    monkeypatch.delenv("MIRRORHUB_CONFIG", raising=False)
    return db_url


def test_scan_one_and_all(env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    origin = make_tree(tmp_path / "origin", ORIGIN)
    with (
        rsync_daemon({"m": origin}, "127.0.0.2", workdir=tmp_path / "rs") as rs,
        listing_server("127.0.0.3", root=origin) as http,
    ):
        asyncio.run(
            _setup(
                env,
                origin,
                {
                    "good-rsync": {"rsync_url": rs + "m/"},
                    "good-http": {"http_url": http},
                    "broken": {"http_url": http + "nothing-here/"},
                    "off": {"http_url": http, "enabled": False},
                },
            )
        )
        assert main(["scan", "good-rsync"]) == 0
        out = capsys.readouterr().out
        assert "good-rsync" in out and "rsync" in out and "yes" in out
        assert main(["scan", "--all"]) == 1  # one scan failed
        out = capsys.readouterr().out
    assert "good-http" in out and "broken" in out and "HTTP 404" in out
    assert "off" not in out.split()  # disabled mirrors are not scanned by --all
    lines = {line.split()[0]: line.split() for line in out.splitlines()[1:] if line.strip()}
    assert lines["good-http"][1:7] == ["http", "yes", "5", "5", "0", "0"]
    assert lines["good-rsync"][1:7] == ["rsync", "yes", "5", "5", "0", "0"]
    assert lines["broken"][1:3] == ["http", "no"]


def test_usage_errors(env: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["scan"]) == 1
    assert "give mirror names or --all" in capsys.readouterr().err
    assert main(["scan", "nope"]) == 1
    assert "no mirror named 'nope'" in capsys.readouterr().err
