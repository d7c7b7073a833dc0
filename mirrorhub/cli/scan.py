"""``mirrorhub scan NAME... | --all``: scan mirrors now and print what each scan found."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Sequence
from typing import Any

from mirrorhub.errors import ValidationError
from mirrorhub.settings import Settings
from mirrorhub.workers.mirror_scan import ScanReport


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "scan",
        help="scan mirrors (rsync or HTTP listing) and record what differs from the origin",
        description="List each mirror over rsync (when it has an rsync URL) or through its "
        "HTTP(S) directory listings, compare with the origin files and record the differences. "
        "A failed scan keeps the mirror's last good data. Exit code 1 if any scan failed.",
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="mirrors to scan")
    parser.add_argument("--all", action="store_true", help="scan every enabled mirror")
    parser.add_argument(
        "--jobs", type=int, default=4, metavar="N", help="mirrors scanned at once (default: 4)"
    )
    parser.set_defaults(handler=_scan)


def _scan(args: argparse.Namespace, settings: Settings) -> int:
    if bool(args.names) == bool(args.all):
        raise ValidationError({"NAME": "give mirror names or --all (not both)"})
    if args.jobs < 1:
        raise ValidationError({"--jobs": "must be at least 1"})
    reports = asyncio.run(_run(settings, args.names, args.all, args.jobs, sys.stdout.isatty()))
    print_reports(reports)
    return 0 if all(r.ok for r in reports) else 1


async def _run(
    settings: Settings, names: Sequence[str], everything: bool, jobs: int, tty: bool
) -> list[ScanReport]:
    from mirrorhub import services
    from mirrorhub.db.session import create_engine, session_factory
    from mirrorhub.workers.mirror_scan import scan_mirror

    engine = create_engine(settings.database_url)
    try:
        sessions = session_factory(engine)
        if everything:
            mirrors = [r.mirror for r in await services.list_mirrors(sessions) if r.mirror.enabled]
        else:  # look every name up first: a typo fails before any scan starts
            mirrors = [(await services.get_mirror(sessions, n)).mirror for n in names]
        limit = asyncio.Semaphore(jobs)
        with _progress(tty, len(mirrors)) as advance:

            async def one(mirror: Any) -> ScanReport:
                async with limit:
                    report = await scan_mirror(sessions, settings, mirror)
                advance(report)
                return report

            return list(await asyncio.gather(*(one(m) for m in mirrors)))
    finally:
        await engine.dispose()


class _progress:
    """A rich progress bar on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled = enabled and total > 0
        self.total = total
        self.bar: Any = None

    def __enter__(self) -> Callable[[ScanReport], None]:
        if not self.enabled:
            return lambda _report: None
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        self.bar = Progress(
            "scanning", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
        )
        self.bar.__enter__()
        task = self.bar.add_task("scan", total=self.total)
        return lambda _report: self.bar.advance(task)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def print_reports(reports: Sequence[ScanReport]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("mirror", "method", "ok"):
        table.add_column(column, no_wrap=True)
    for column in ("seen", "matching", "missing", "outdated"):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("duration", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold")
    for r in sorted(reports, key=lambda r: r.mirror):
        ok = "yes" if r.ok else ("EXCLUDED" if r.scan_failed else "no")
        table.add_row(
            r.mirror,
            r.method,
            ok,
            f"{r.files_seen:,}",
            f"{r.matching:,}",
            f"{r.missing:,}",
            f"{r.outdated:,}",
            f"{r.duration:.1f} s",
            r.error,
            style=None if r.ok else "red",
        )
    Console(width=None if sys.stdout.isatty() else 160, soft_wrap=False).print(table)
