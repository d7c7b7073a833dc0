"""The live objects shared by the dispatcher and the pages under /-/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from mirrorhub.db.index_load import DatabaseLoader
from mirrorhub.db.session import session_factory
from mirrorhub.geo import GeoLocator
from mirrorhub.index import IndexHolder
from mirrorhub.settings import Settings


@dataclass
class AppState:
    """Created once per dispatcher process; pages reach it as ``request.app.state.mirrorhub``.

    ``extras`` lets a feature module keep its own live object (a cache, a counter) without
    every module having to know every other one.
    """

    settings: Settings
    holder: IndexHolder
    geo: GeoLocator
    engine: AsyncEngine
    clock: Callable[[], float] = time.time
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    extras: dict[str, Any] = field(default_factory=dict)
    sessions: async_sessionmaker[AsyncSession] = field(init=False)
    loader: DatabaseLoader = field(init=False)  # where the index's data comes from

    def __post_init__(self) -> None:
        self.sessions = session_factory(self.engine)
        self.loader = DatabaseLoader(self.sessions)
