"""Helpers shared by the command modules."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from mirrorhub.settings import Settings

T = TypeVar("T")


def run_with_database(settings: Settings, use: Callable[[Any], Awaitable[T]]) -> T:
    """Run ``use(sessions)`` against the configured database, checked and disposed.

    The schema check turns a missing or old database into one line that says to run
    ``mirrorhub db upgrade`` instead of a traceback.
    """

    async def main() -> T:
        from mirrorhub.db.session import create_engine, session_factory
        from mirrorhub.services import check_database

        engine = create_engine(settings.database_url)
        try:
            await check_database(engine)
            return await use(session_factory(engine))
        finally:
            await engine.dispose()

    return asyncio.run(main())
