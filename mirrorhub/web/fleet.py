"""The fleet under /-/: live dispatchers and workers and the job leases they hold.

Also wires this dispatcher into the fleet: its heartbeat row in ``processes`` and, on
PostgreSQL, the LISTEN connection that wakes the index refresh loop (``index_wake``).
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from mirrorhub import fleet
from mirrorhub.notify import IndexListener
from mirrorhub.web.state import AppState
from mirrorhub.web.templating import make_templates
from mirrorhub.workers import leases

DB_TIMEOUT = 5.0  # a database behind a dead link must not hang the page for a minute


async def snapshot(state: AppState) -> dict[str, Any]:
    """Live processes and every job's lease, as plain data for the API and the page."""
    now = state.clock()
    heartbeat = state.settings.heartbeat_seconds
    processes = await fleet.live_processes(state.sessions, now, heartbeat)
    jobs = await leases.list_jobs(state.sessions)
    return {
        "now": now,
        "heartbeat_seconds": heartbeat,
        "processes": [
            {
                "id": p.id,
                "role": p.role,
                "host": p.host,
                "pid": p.pid,
                "started_at": p.started_at,
                "heartbeat_at": p.heartbeat_at,
                "index_version": p.index_version,
            }
            for p in processes
        ],
        "jobs": [
            {
                "key": j.key,
                "leased": j.lease_until >= now and bool(j.lease_owner),
                "lease_owner": j.lease_owner or None,
                "lease_until": j.lease_until or None,
                "next_run": j.next_run,
                "last_started": j.last_started,
                "last_finished": j.last_finished,
                "failures": j.failures,
                "last_error": j.last_error,
            }
            for j in jobs
        ],
    }


def routes(state: AppState) -> list[BaseRoute]:
    listener = IndexListener(state.settings.database_url, enabled=state.settings.pg_notify)
    state.extras["index_wake"] = listener.event
    state.extras["index_listener"] = listener
    heartbeat = fleet.Heartbeat(
        state.sessions,
        fleet.process_id("dispatcher"),
        "dispatcher",
        state.settings.heartbeat_seconds,
        index_version=lambda: state.holder.current.version,
        clock=state.clock,
    )

    async def start() -> None:
        listener.start()
        heartbeat.start()

    async def stop() -> None:
        await listener.stop()
        await heartbeat.stop()

    state.extras.setdefault("startup", []).append(start)
    state.extras.setdefault("shutdown", []).append(stop)
    templates = make_templates()

    async def api(request: Request) -> Response:
        try:
            body = await asyncio.wait_for(snapshot(state), DB_TIMEOUT)
        except Exception as exc:  # the database is away: say so, do not 500
            return JSONResponse(
                {"error": f"database unavailable: {type(exc).__name__}"},
                status_code=503,
                headers={"cache-control": "no-store"},
            )
        return JSONResponse(body, headers={"cache-control": "no-store"})

    async def page(request: Request) -> Response:
        error = None
        try:
            body = await asyncio.wait_for(snapshot(state), DB_TIMEOUT)
        except Exception as exc:
            body, error = {"now": state.clock(), "processes": [], "jobs": []}, type(exc).__name__
        return templates.TemplateResponse(
            request,
            "workers.html",
            {**body, "error": error, "listening": listener.connected},
            status_code=503 if error else 200,
            headers={"cache-control": "no-store"},
        )

    return [Route("/-/api/workers", api), Route("/-/workers", page)]
