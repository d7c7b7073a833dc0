"""``mirrorhub mirror ...`` run in-process against SQLite and PostgreSQL."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest

import mirrorhub.cli as cli
from mirrorhub.cli import main


def _importable(name: str) -> bool:
    try:
        importlib.import_module(f"mirrorhub.cli.{name}")
    except ImportError:
        return False
    return True


@pytest.fixture(autouse=True)
def _only_importable_commands(monkeypatch: pytest.MonkeyPatch) -> None:
    # Other command modules are written in parallel: these tests must not depend on them.
    present = tuple(n for n in cli.COMMAND_MODULES if n == "mirror" or _importable(n))
    monkeypatch.setattr(cli, "COMMAND_MODULES", present)


@pytest.fixture
def db(db_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MIRRORHUB_DATABASE_URL", db_url)
    monkeypatch.delenv("MIRRORHUB_ALLOW_PRIVATE_MIRRORS", raising=False)
    return db_url


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["mirror", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_add_list_show_edit_remove(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "add",
        "Alpha",
        "--http",
        "http://alpha.example:8080/pub",
        "--https",
        "https://alpha.example/pub/",
        "--country",
        "de",
        "--lat",
        "50",
        "--lon",
        "8",
        "--asn",
        "AS64500",
        "--networks",
        "192.0.2.0/24,2001:db8::/32",
        "--capacity",
        "2000",
        "--scope",
        "/pub/iso,debian",
        "--only-own-country",
        "--exclude-countries",
        "cn,ru",
        "--contact",
        "ops@alpha.example",
    )
    assert (code, out, err) == (0, "added mirror alpha\n", "")
    assert run(capsys, "add", "beta", "--https", "https://beta.example/", "--disabled")[:2] == (
        0,
        "added mirror beta (disabled)\n",
    )

    code, out, _ = run(capsys, "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "ENABLED", "HEALTH", "COUNTRY", "CAPACITY", "URL"]
    assert lines[1].split() == [
        "alpha",
        "yes",
        "unknown",
        "DE",
        "2000",
        "Mbit/s",
        "https://alpha.example/pub/",
    ]
    assert lines[2].split()[:2] == ["beta", "no"]

    code, out, _ = run(capsys, "show", "ALPHA", "--json")
    data = json.loads(out)
    assert data["http_url"] == "http://alpha.example:8080/pub/"
    assert data["continent"] == "EU"
    assert data["asn"] == 64500
    assert data["scope"] == ["pub/iso/", "debian/"]
    assert data["excluded_countries"] == ["CN", "RU"]
    assert data["only_own_country"] is True

    code, out, _ = run(capsys, "show", "alpha")
    assert code == 0
    assert "http url            http://alpha.example:8080/pub/" in out
    assert "networks            192.0.2.0/24, 2001:db8::/32" in out

    code, out, _ = run(
        capsys, "edit", "alpha", "--https", "", "--no-only-own-country", "--capacity", "10"
    )
    assert (code, out) == (0, "updated mirror alpha\n")
    data = json.loads(run(capsys, "show", "alpha", "--json")[1])
    assert (data["https_url"], data["only_own_country"], data["capacity"]) == (None, False, 10)
    assert data["http_url"] == "http://alpha.example:8080/pub/"  # untouched
    assert run(capsys, "edit", "alpha", "--capacity", "10")[:2] == (
        0,
        "mirror alpha unchanged\n",
    )

    assert run(capsys, "disable", "alpha")[:2] == (0, "mirror alpha disabled\n")
    assert run(capsys, "enable", "beta")[:2] == (0, "mirror beta enabled\n")
    assert run(capsys, "remove", "beta")[:2] == (0, "removed mirror beta\n")
    names = [m["name"] for m in json.loads(run(capsys, "list", "--json")[1])]
    assert names == ["alpha"]


def test_empty_list_is_just_the_header(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "list") == (0, "NAME  ENABLED  HEALTH  COUNTRY  CAPACITY  URL\n", "")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["add", "x", "--http", "http://evil@x.example/", "--https", "javascript:alert(1)"],
            "--http: must not contain a user name or password (user@); "
            "--https: must start with https://",
        ),
        (["add", "x"], "--http: an http:// or https:// URL is required"),
        (["add", "x!", "--http", "http://x.example/"], "NAME: 1 to 64 characters"),
        (["add", "x", "--http", "http://127.0.0.1/"], "--http: 127.0.0.1 is a private"),
        (["add", "x", "--http", "http://x.example/", "--lat", "91", "--lon", "0"], "--lat: "),
        (["add", "dup", "--http", "http://x.example/"], "a mirror named 'dup' already exists"),
        (["edit", "dup", "--http", ""], "--http: an http:// or https:// URL is required"),
        (["edit", "nope", "--capacity", "5"], "no mirror named 'nope'"),
        (["show", "nope"], "no mirror named 'nope'"),
        (["enable", "nope"], "no mirror named 'nope'"),
        (["remove", "nope"], "no mirror named 'nope'"),
    ],
)
def test_errors_are_one_line(
    db: str, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    assert run(capsys, "add", "dup", "--http", "http://dup.example/")[0] == 0
    code, out, err = run(capsys, *argv)
    assert code == 1
    assert out == ""
    assert err.startswith(f"mirrorhub: error: {message}")
    assert err.count("\n") == 1


def test_private_mirrors_when_allowed(
    db: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MIRRORHUB_ALLOW_PRIVATE_MIRRORS", "true")
    code, out, _ = run(capsys, "add", "local", "--http", "http://127.0.0.2:8080/pub/")
    assert (code, out) == (0, "added mirror local\n")


def test_edit_without_options_is_a_usage_error(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "add", "a", "--http", "http://a.example/")
    code, _, err = run(capsys, "edit", "a")
    assert code == 2
    assert "nothing to change" in err


def test_a_database_without_schema_says_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MIRRORHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'new.db'}")
    code, out, err = run(capsys, "list")
    assert (code, out) == (1, "")
    assert err.startswith("mirrorhub: error: database not initialised")
    assert err.rstrip().endswith("run `mirrorhub db upgrade`")
    assert err.count("\n") == 1
    assert main(["db", "upgrade"]) == 0
    capsys.readouterr()
    assert run(capsys, "list")[0] == 0


@pytest.mark.parametrize(
    "argv",
    [[], ["add"], ["list"], ["show"], ["edit"], ["enable"], ["disable"], ["remove"]],
)
def test_every_command_has_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["mirror", *argv, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: mirrorhub mirror")
