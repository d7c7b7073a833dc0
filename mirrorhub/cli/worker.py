"""``mirrorhub worker``: run the background jobs (scans, probes, re-checks) without serving."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any

from mirrorhub.settings import Settings


def register(sub: Any) -> None:
    parser = sub.add_parser("worker", help="run the background jobs (scans, probes, re-checks)")
    parser.add_argument(
        "--id", dest="worker_id", help="worker name in leases (default: HOSTNAME:PID)"
    )
    parser.set_defaults(handler=_worker)


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    asyncio.run(_main(settings, args.worker_id))
    return 0


async def _main(settings: Settings, owner: str | None) -> None:
    from mirrorhub.db.session import create_engine, session_factory
    from mirrorhub.services import check_database
    from mirrorhub.workers.jobs import run_workers

    engine = create_engine(settings.database_url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await check_database(engine)
        await run_workers(session_factory(engine), settings, stop, owner=owner)
    finally:
        await engine.dispose()
