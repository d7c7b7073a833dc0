"""``mirrorhub user ...`` in-process, password from stdin or the (patched) prompt."""

from __future__ import annotations

import io
import json

import pytest

from mirrorhub.cli import main

PASSWORD = "correct horse battery"


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MIRRORHUB_DATABASE_URL", db_url)
    return db_url


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> tuple[int, str, str]:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    code = main(["user", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_user_lifecycle(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, out, _ = run(
        capsys, monkeypatch, "add", "Alice", "--role", "admin", "--password-stdin",
        stdin=PASSWORD + "\n",
    )  # fmt: skip
    assert code == 0 and "added admin alice" in out
    prompts = iter([PASSWORD, PASSWORD])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(prompts))
    code, out, _ = run(capsys, monkeypatch, "add", "olga", "--role", "operator")
    assert code == 0
    code, out, _ = run(capsys, monkeypatch, "list", "--json")
    listed = json.loads(out)
    assert [(u["name"], u["role"]) for u in listed] == [("alice", "admin"), ("olga", "operator")]
    code, out, _ = run(
        capsys, monkeypatch, "passwd", "olga", "--password-stdin", stdin="another long one\n"
    )
    assert code == 0 and "sessions have ended" in out
    code, out, _ = run(capsys, monkeypatch, "remove", "olga")
    assert code == 0
    code, out, _ = run(capsys, monkeypatch, "list")
    assert "alice" in out and "olga" not in out


def test_user_errors(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = run(
        capsys, monkeypatch, "add", "bob", "--role", "admin", "--password-stdin", stdin="short\n"
    )
    assert code == 1 and "password" in err
    prompts = iter([PASSWORD, PASSWORD + "x"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(prompts))
    code, _, err = run(capsys, monkeypatch, "add", "bob", "--role", "admin")
    assert code == 1 and "do not match" in err
    code, _, err = run(capsys, monkeypatch, "remove", "nobody")
    assert code == 1 and "no user named" in err
    with pytest.raises(SystemExit):
        run(capsys, monkeypatch, "add", "bob", "--role", "root")
