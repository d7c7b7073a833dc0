"""Routes under /-/ (placeholder until this feature lands)."""

from __future__ import annotations

from starlette.routing import BaseRoute

from mirrorhub.web.state import AppState


def routes(state: AppState) -> list[BaseRoute]:
    return []
