"""``mirrorhub token add|list|revoke`` in-process against SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
import json

import pytest

import mirrorhub.cli as cli
from mirrorhub import tokens
from mirrorhub.cli import build_parser, main
from mirrorhub.db.session import create_engine, session_factory


def _importable(name: str) -> bool:
    try:
        importlib.import_module(f"mirrorhub.cli.{name}")
    except ImportError:
        return False
    return True


@pytest.fixture(autouse=True)
def _only_importable_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other command modules are written in parallel: these tests must not depend on them.
    present = tuple(n for n in cli.COMMAND_MODULES if n == "token" or _importable(n))
    monkeypatch.setattr(cli, "COMMAND_MODULES", present)


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MIRRORHUB_DATABASE_URL", db_url)
    return db_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["token", *argv])
    out, err = capsys.readouterr()
    return code, out, err


async def _verify(url: str, secret: str) -> bool:
    engine = create_engine(url)
    try:
        return await tokens.verify_token(session_factory(engine), secret) is not None
    finally:
        await engine.dispose()


def test_token_is_a_registered_command() -> None:
    assert "token" in build_parser().format_help()


def test_add_list_revoke(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "add", "deploy")
    assert code == 0 and "shown only this once" in err
    secret = out.strip()
    assert secret.startswith("mh_")
    assert asyncio.run(_verify(db, secret))

    code, out, _ = run(capsys, "list")
    assert code == 0 and "deploy" in out and "active" in out and secret not in out
    assert secret[:11] in out  # the display prefix

    code, out, _ = run(capsys, "add", "deploy")
    assert code == 1

    code, out, _ = run(capsys, "revoke", "deploy")
    assert code == 0 and "revoked token deploy" in out
    assert not asyncio.run(_verify(db, secret))

    code, out, _ = run(capsys, "list", "--json")
    listed = json.loads(out)
    assert listed[0]["name"] == "deploy" and listed[0]["revoked_at"] is not None
    assert "token" not in listed[0]


def test_add_json_and_errors(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "add", "ci", "--json")
    data = json.loads(out)
    assert code == 0 and data["name"] == "ci" and data["token"].startswith(data["prefix"])
    code, _, err = run(capsys, "revoke", "missing")
    assert code == 1 and "no token named" in err
    code, _, err = run(capsys, "add", "bad name")
    assert code == 1 and "name" in err
