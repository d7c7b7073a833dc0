"""The demo's sample origin tree and the (partly different) copies the demo mirrors carry.

Everything is deterministic: file contents come from SHAKE-256 of the path, and mtimes are
fixed whole minutes in UTC, so HTTP listings (which show minutes) match the origin exactly and
a rebuilt demo directory is byte-for-byte the same.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

MiB = 1 << 20


def _ts(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=UTC).timestamp())


T_OLD = _ts("2024-03-04 09:30")  # the 1.0 release
T_NEW = _ts("2024-06-18 14:05")  # the 1.1 release and the current repository
T_STALE = _ts("2024-05-02 08:15")  # the outdated copy on one mirror

# Paths the printed examples (and the tests) use.
ISO_OLD = "projects/aurora/1.0/aurora-1.0-amd64.iso"  # on every mirror
ISO_NEW = "projects/aurora/1.1/aurora-1.1-amd64.iso"  # not yet on berlin
DEB = "projects/borealis/pool/main/b/borealis/borealis_2.3_amd64.deb"  # outdated on paris
RELEASE = "projects/borealis/dists/stable/Release"  # repository metadata: origin only
NOTES = "projects/aurora/1.1/release notes.txt"  # under the redirect threshold
HANDBOOK = "projects/aurora/1.1/Aurora Handbook (1.1).pdf"  # spaces and parentheses
GUIDE = "projects/borealis/docs/guía de instalación.pdf"  # non-ASCII

# (path, size, mtime) of the large files: pseudo-random bytes, redirected to mirrors.
BINARIES: tuple[tuple[str, int, int], ...] = (
    (ISO_OLD, 6 * MiB + 4096, T_OLD),
    ("projects/aurora/1.0/aurora-1.0-arm64.iso", 4 * MiB + 512, T_OLD),
    (ISO_NEW, 6 * MiB + 65536, T_NEW),
    (HANDBOOK, 3 * MiB // 2, T_NEW),
    (DEB, 2 * MiB + 777, T_NEW),
    (GUIDE, MiB + 123, T_OLD),
)


@dataclass(frozen=True, slots=True)
class Variant:
    """How a mirror's copy differs from the origin."""

    scope: tuple[str, ...] = ()  # copy only these sub-trees ("projects/aurora/"); () = all
    missing: tuple[str, ...] = ()  # files left out (not synced yet)
    outdated: tuple[str, ...] = ()  # files replaced by an older, shorter version


def content(path: str, size: int) -> bytes:
    """Deterministic pseudo-random bytes for ``path``."""
    return hashlib.shake_256(f"mirrorhub demo: {path}".encode()).digest(size)


def _write(root: Path, rel: str, data: bytes, mtime: int) -> None:
    target = root / rel
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    os.utime(target, (mtime, mtime))


def _sums(root: Path, directory: str) -> bytes:
    lines = []
    for path, _, _ in BINARIES:
        if path.startswith(directory) and "/" not in path[len(directory) :]:
            digest = hashlib.sha256((root / path).read_bytes()).hexdigest()
            lines.append(f"{digest} *{path[len(directory) :]}\n")
    return "".join(sorted(lines, key=lambda line: line.split("*", 1)[1])).encode()


def _release() -> bytes:
    """A Debian-style Release file, large enough (> 4 KiB) that only its name keeps it on
    the origin: it matches an origin-only pattern."""
    lines = [
        "Origin: Borealis",
        "Label: Borealis",
        "Suite: stable",
        "Codename: polaris",
        "Date: Tue, 18 Jun 2024 14:05:00 UTC",
        "Architectures: amd64 arm64 armhf i386 ppc64el riscv64 s390x",
        "Components: main contrib non-free",
        "Description: Borealis stable repository (mirrorhub demo)",
        "SHA256:",
    ]
    for comp in ("main", "contrib", "non-free"):
        for arch in ("amd64", "arm64", "armhf", "i386", "ppc64el", "riscv64", "s390x"):
            for name in ("Packages", "Packages.gz", "Packages.xz"):
                rel = f"{comp}/binary-{arch}/{name}"
                digest = hashlib.sha256(rel.encode()).hexdigest()
                size = int(digest[:5], 16)
                lines.append(f" {digest} {size:>8} {rel}")
    return ("\n".join(lines) + "\n").encode()


def write_origin(root: Path, trace_file: str | None = None) -> list[str]:
    """Write the sample origin tree under ``root``; returns the published paths, sorted.

    ``trace_file`` (a relative path) gets the publish time, as an origin's sync job writes it.
    """
    for path, size, mtime in BINARIES:
        _write(root, path, content(path, size), mtime)
    texts = {
        "README.txt": (
            b"mirrorhub demo origin. Large files are redirected to the nearest mirror that "
            b"holds them; small files and repository metadata are served from here.\n",
            T_NEW,
        ),
        NOTES: (
            b"Aurora 1.1\n\n* faster boot\n* new installer\n* the handbook is now a PDF\n",
            T_NEW,
        ),
        RELEASE: (_release(), T_NEW),
    }
    if trace_file:
        texts[trace_file] = (b"2024-06-18T14:05:00Z\n", T_NEW)
    for path, (data, mtime) in texts.items():
        _write(root, path, data, mtime)
    for directory, mtime in (("projects/aurora/1.0/", T_OLD), ("projects/aurora/1.1/", T_NEW)):
        _write(root, directory + "SHA256SUMS", _sums(root, directory), mtime)
    return sorted(str(p.relative_to(root).as_posix()) for p in root.rglob("*") if p.is_file())


def write_mirror(origin: Path, dest: Path, variant: Variant, always: str | None = None) -> None:
    """Copy the origin tree to ``dest`` as ``variant`` says (mtimes preserved).

    ``always`` (the trace file) is copied whatever the scope: mirrors carry it to show how
    fresh they are.
    """
    for src in sorted(origin.rglob("*")):
        if not src.is_file():
            continue
        rel = src.relative_to(origin).as_posix()
        if variant.scope and not rel.startswith(variant.scope) and rel != always:
            continue
        if rel in variant.missing:
            continue
        if rel in variant.outdated:
            # The previous build: a different (shorter) file with an older date.
            size = src.stat().st_size
            _write(dest, rel, content(rel + " (2.2)", size - size // 8), T_STALE)
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def reset_dirs(paths: Iterable[Path]) -> None:
    """Remove and recreate directories the demo owns (a re-run starts from a clean tree)."""
    for path in paths:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        path.mkdir(parents=True)
        path.chmod(0o755)
