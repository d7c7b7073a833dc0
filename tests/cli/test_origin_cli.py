"""``mirrorhub scan-origin`` run in-process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mirrorhub.cli import main


def make_origin(root: Path) -> None:
    (root / "pub").mkdir(parents=True)
    (root / "pub" / "a.iso").write_bytes(b"a" * 2048)
    (root / "pub" / "b c.txt").write_bytes(b"b")
    os.mkfifo(root / "pub" / "fifo")  # not published: counted as skipped


def test_scan_origin_prints_the_counts(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    make_origin(tmp_path / "origin")
    monkeypatch.setenv("MIRRORHUB_DATABASE_URL", db_url)
    monkeypatch.setenv("MIRRORHUB_ORIGIN_DIR", str(tmp_path / "origin"))

    assert main(["scan-origin"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(
        "origin scan: 2 files: 2 new, 0 changed, 0 unchanged, 0 deleted, 1 skipped; "
        "2.0 KiB hashed in "
    )
    assert out.count("\n") == 1

    (tmp_path / "origin" / "pub" / "a.iso").unlink()
    assert main(["scan-origin"]) == 0
    assert "1 files: 0 new, 0 changed, 1 unchanged, 1 deleted, 1 skipped; 0 B hashed" in (
        capsys.readouterr().out
    )


@pytest.mark.parametrize("value", [None, "missing"])
def test_unset_or_missing_origin_dir_is_one_line_naming_the_setting(
    value: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MIRRORHUB_DATABASE_URL", f"sqlite:///{tmp_path / 'db.sqlite'}")
    if value is None:
        monkeypatch.delenv("MIRRORHUB_ORIGIN_DIR", raising=False)
    else:
        monkeypatch.setenv("MIRRORHUB_ORIGIN_DIR", str(tmp_path / value))
    assert main(["scan-origin"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("mirrorhub: error: MIRRORHUB_ORIGIN_DIR: ")
    assert err.count("\n") == 1
