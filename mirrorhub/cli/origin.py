"""``mirrorhub scan-origin``: bring the database in line with the origin tree."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from mirrorhub.errors import SettingsError
from mirrorhub.settings import Settings, env_name
from mirrorhub.workers.origin_scan import OriginScanResult, ScanProgress, scan_origin


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "scan-origin",
        help="scan the origin tree and record new, changed and deleted files",
        description="Walk MIRRORHUB_ORIGIN_DIR, hash new and changed files (sha256) and "
        "update the database.",
    )
    parser.add_argument(
        "--allow-empty",
        action="store_true",
        help="accept an empty origin directory (otherwise refused: it would unpublish "
        "every file, as an unmounted volume would)",
    )
    parser.add_argument(
        "--workers", type=int, default=4, metavar="N", help="hashing threads (default: 4)"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="name every entry that is not published"
    )
    parser.set_defaults(handler=_scan)


def _scan(args: argparse.Namespace, settings: Settings) -> int:
    if settings.origin_dir is None:
        raise SettingsError(env_name("origin_dir"), "not set (the directory tree to publish)")
    if args.verbose:
        logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with _progress(sys.stdout.isatty()) as progress:
        result = asyncio.run(_run(settings, args, progress))
    print(summary(result))
    return 0


async def _run(
    settings: Settings, args: argparse.Namespace, progress: Callable[[ScanProgress], None] | None
) -> OriginScanResult:
    from mirrorhub.db.session import create_engine, session_factory

    assert settings.origin_dir is not None
    engine = create_engine(settings.database_url)
    try:
        return await scan_origin(
            session_factory(engine),
            settings.origin_dir,
            progress=progress,
            hash_workers=args.workers,
            allow_empty=args.allow_empty,
        )
    finally:
        await engine.dispose()


def summary(result: OriginScanResult) -> str:
    return (
        f"origin scan: {result.seen:,} files: {result.new:,} new, {result.changed:,} changed, "
        f"{result.unchanged:,} unchanged, {result.deleted:,} deleted, "
        f"{result.skipped:,} skipped; {_size(result.bytes_hashed)} hashed "
        f"in {result.duration:.1f} s"
    )


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[ScanProgress], None] | None]:
    """A rich progress display on a terminal; nothing (a final line only) otherwise."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[detail]}"),
        TimeElapsedColumn(),
        transient=True,
    ) as bar:
        walk = bar.add_task("walking", total=None, detail="")
        hashing = bar.add_task("hashing", total=None, detail="", visible=False)

        def update(p: ScanProgress) -> None:
            if p.phase == "walk":
                bar.update(walk, detail=f"{p.walked:,} files")
                return
            bar.update(walk, total=1, completed=1, detail=f"{p.walked:,} files")
            bar.update(
                hashing,
                visible=True,
                total=max(p.bytes_to_hash, p.bytes_hashed, 1),
                completed=p.bytes_hashed if p.to_hash else 1,
                detail=f"{p.hashed:,}/{p.to_hash:,} files, "
                f"{_size(p.bytes_hashed)} of {_size(p.bytes_to_hash)}",
            )

        yield update
