"""``mirrorhub probe NAME... | --all``: run one health-probe round now and show it."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from mirrorhub.settings import Settings
from mirrorhub.workers.probe import Progress
from mirrorhub.workers.probe_apply import MirrorOutcome


def register(sub: Any) -> None:
    parser = sub.add_parser(
        "probe",
        help="probe mirror health and trace-file lag now",
        description="Request a small file from each mirror over each scheme it offers, "
        "record the results and update health (down after MIRRORHUB_PROBE_DOWN_AFTER failed "
        "rounds, up after MIRRORHUB_PROBE_UP_AFTER good ones) and lag.",
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("names", nargs="*", default=[], metavar="NAME", help="mirrors to probe")
    which.add_argument("--all", action="store_true", help="probe every enabled mirror")
    parser.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="endpoints probed at once (default: MIRRORHUB_PROBE_CONCURRENCY)",
    )
    parser.set_defaults(handler=_probe)


def _probe(args: argparse.Namespace, settings: Settings) -> int:
    if not args.all and not args.names:
        print("mirrorhub probe: error: name a mirror or pass --all", file=sys.stderr)
        return 2
    if args.concurrency is not None and args.concurrency < 1:
        print("mirrorhub probe: error: --concurrency must be at least 1", file=sys.stderr)
        return 2
    names = None if args.all else list(dict.fromkeys(args.names))
    with _progress(sys.stdout.isatty()) as progress:
        outcomes = asyncio.run(_run(settings, names, args.concurrency, progress))
    print(render_table(outcomes))
    return 0


async def _run(
    settings: Settings,
    names: Sequence[str] | None,
    concurrency: int | None,
    progress: Progress | None,
) -> list[MirrorOutcome]:
    from mirrorhub.db.session import create_engine, session_factory
    from mirrorhub.workers.probe import probe_mirrors

    engine = create_engine(settings.database_url)
    try:
        return await probe_mirrors(
            session_factory(engine), settings, names, concurrency=concurrency, progress=progress
        )
    finally:
        await engine.dispose()


def _lag(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def render_table(outcomes: Sequence[MirrorOutcome]) -> str:
    """One line per mirror and scheme; health and lag on the mirror's first line."""
    header = ("MIRROR", "SCHEME", "OK", "STATUS", "LATENCY", "ERROR", "HEALTH", "LAG")
    lines: list[tuple[str, ...]] = [header]
    for o in sorted(outcomes, key=lambda o: o.probe.name):
        lag = _lag(o.lag_seconds) + (" (lagging)" if o.lagging else "")
        for i, r in enumerate(o.probe.results):
            first = i == 0
            lines.append(
                (
                    o.probe.name if first else "",
                    str(r.scheme),
                    "yes" if r.ok else "no",
                    str(r.status) if r.status is not None else "-",
                    f"{r.latency_ms:.0f} ms" if r.latency_ms is not None else "-",
                    r.error or "-",
                    str(o.health) if first else "",
                    lag if first else "",
                )
            )
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)).rstrip()
        for line in lines
    )
    return text + f"\n{len(outcomes)} mirror(s) probed"


@contextmanager
def _progress(enabled: bool) -> Iterator[Progress | None]:
    """A rich progress bar on a terminal; nothing otherwise."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress(
        "probing", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
    ) as bar:
        task = bar.add_task("probing", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
