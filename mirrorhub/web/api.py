"""The JSON API under ``/-/api/``: mirrors, decisions, statistics; writes need a token.

Routing and method checks come from :data:`mirrorhub.web.openapi.OPERATIONS`, the same
table the OpenAPI document is rendered from. Every answer is JSON; bad input is a 4xx with
``{"error": ..., "fields": {...}}`` and a database outage is a 503, never a 500.

A mirror's JSON and a file decision carry each mirror's ``load``: the dispatcher's live
estimate against the capacity (:func:`mirrorhub.load.mirror_load`; 0 before any estimate).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import URLPath
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, request_response
from starlette.types import Receive, Scope, Send

from mirrorhub import services, tokens
from mirrorhub.db.models import JobRow
from mirrorhub.db.repositories import MirrorRecord, record_json
from mirrorhub.domain import Client, Options, Scheme
from mirrorhub.errors import Conflict, InvalidPath, MirrorhubError, NotFound, ValidationError
from mirrorhub.load import LoadView, mirror_load
from mirrorhub.paths import normalize_path
from mirrorhub.proxies import parse_address, resolve_client
from mirrorhub.web import openapi
from mirrorhub.web.api_body import body_to_fields
from mirrorhub.web.api_io import (
    NO_STORE,
    ApiError,
    bool_param,
    country_param,
    country_set,
    error,
    ok,
    query_value,
    read_json,
)
from mirrorhub.web.api_stats import stats_handlers
from mirrorhub.web.openapi import Operation
from mirrorhub.web.state import AppState
from mirrorhub.web.views import decision_json

log = logging.getLogger(__name__)

PREFIX = "/-/api/"
Params = dict[str, str]
Handler = Callable[[Request, Params, "tokens.TokenInfo | None"], Awaitable[Response]]


# --- routing ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Template:
    regex: re.Pattern[str]
    methods: dict[str, Operation]  # upper-case method -> operation


def _compile(path: str) -> re.Pattern[str]:
    """An OpenAPI template as a regex: ``{path}`` spans slashes, other parameters do not."""
    out = ""
    for literal, name in re.findall(r"([^{]*)(?:\{(\w+)\})?", path):
        out += re.escape(literal)
        if name:
            out += f"(?P<{name}>.*)" if name == "path" else f"(?P<{name}>[^/]+)"
    return re.compile(out, re.DOTALL)  # a %0A in a path is a character like any other


_TEMPLATES = [
    _Template(_compile(path), methods)
    for path, methods in openapi.templates().items()
    if path.startswith(PREFIX)
]


def resolve(method: str, path: str) -> tuple[Operation, Params]:
    """The operation for a request, or ApiError 404/405 (with Allow) when there is none."""
    allowed: set[str] = set()
    lookup = "GET" if method == "HEAD" else method
    for template in _TEMPLATES:
        match = template.regex.fullmatch(path)
        if match is None:
            continue
        op = template.methods.get(lookup)
        if op is not None:
            if not op.ours:  # another module serves it and would have matched first
                raise ApiError(404, "not served by this dispatcher")
            return op, match.groupdict()
        allowed.update(template.methods)
    if allowed:
        if "GET" in allowed:
            allowed.add("HEAD")
        allow = ", ".join(sorted(allowed))
        raise ApiError(405, f"method {method} not allowed here", headers={"allow": allow})
    raise ApiError(404, "no such API resource")


# --- the API ----------------------------------------------------------------------------------


class Api:
    def __init__(self, state: AppState) -> None:
        self.state = state
        self.settings = state.settings
        self.rng = random.Random()
        self.document = json.dumps(openapi.build_document(), indent=1).encode()
        self.scans: set[str] = set()  # mirrors this process is scanning for the API
        self.handlers: dict[str, Handler] = {
            "listMirrors": self.list_mirrors,
            "createMirror": self.create_mirror,
            "getMirror": self.get_mirror,
            "editMirror": self.edit_mirror,
            "deleteMirror": self.delete_mirror,
            "enableMirror": self.enable_mirror,
            "disableMirror": self.disable_mirror,
            "scanMirror": self.scan_mirror,
            "fileDecision": self.file_decision,
            "openapi": self.openapi_document,
        }
        self.handlers.update(stats_handlers(self))

    async def handle(self, request: Request) -> Response:
        try:
            op, params = resolve(request.method, request.scope["path"])
            token = await self.authenticate(request, required=op.auth)
            return await self.handlers[op.operation_id](request, params, token)
        except ApiError as exc:
            return error(exc.status, exc.message, exc.fields, exc.headers)
        except ValidationError as exc:
            return error(422, "invalid input", exc.fields)
        except NotFound as exc:
            return error(404, str(exc))
        except Conflict as exc:
            return error(409, str(exc))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:
            log.warning("API: database unavailable: %s", exc)
            return error(
                503, "the database is unavailable; try again", headers={"retry-after": "5"}
            )

    @property
    def sessions(self) -> services.Sessions:
        return self.state.sessions

    def load_view(self) -> LoadView | None:
        """The dispatcher's current fleet-wide load view (mirrorhub.web.loadsync), if any."""
        view: LoadView | None = self.state.extras.get("load_view")
        return view

    def mirror_json(
        self, record: MirrorRecord, *, private: bool, load: LoadView | None = None
    ) -> dict[str, Any]:
        """record_json plus the mirror's current load."""
        m = record.mirror
        view = load if load is not None else self.load_view()
        return {
            **record_json(record, private=private),
            "load": mirror_load(view, m.name, m.capacity).to_json(),
        }

    async def authenticate(self, request: Request, *, required: bool) -> tokens.TokenInfo | None:
        header = request.headers.get("authorization")
        if header is None:
            if required:
                raise ApiError(
                    401, "this needs a token: Authorization: Bearer TOKEN", headers=_CHALLENGE
                )
            return None
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise ApiError(401, "use Authorization: Bearer TOKEN", headers=_CHALLENGE)
        info = await tokens.verify_token(self.sessions, secret.strip())
        if info is None:
            raise ApiError(401, "unknown or revoked token", headers=_CHALLENGE_INVALID)
        return info

    # --- mirrors ---

    async def list_mirrors(self, request: Request, params: Params, token: Any) -> Response:
        records = await services.list_mirrors(self.sessions)
        view = self.load_view()  # one view for the whole list
        private = token is not None
        return ok({"mirrors": [self.mirror_json(r, private=private, load=view) for r in records]})

    async def get_mirror(self, request: Request, params: Params, token: Any) -> Response:
        record = await services.get_mirror(self.sessions, params["name"])
        return ok(self.mirror_json(record, private=token is not None))

    async def create_mirror(
        self, request: Request, params: Params, token: tokens.TokenInfo | None
    ) -> Response:
        fields = body_to_fields(await read_json(request), partial=False)
        record = await services.add_mirror(
            self.sessions,
            fields,
            allow_private=self.settings.allow_private_mirrors,
            actor=_actor(token),
        )
        name = record.mirror.name
        return ok(
            self.mirror_json(record, private=True), 201, {"location": f"{PREFIX}mirrors/{name}"}
        )

    async def edit_mirror(
        self, request: Request, params: Params, token: tokens.TokenInfo | None
    ) -> Response:
        changes = body_to_fields(await read_json(request), partial=True)
        record = await services.edit_mirror(
            self.sessions,
            params["name"],
            changes,
            allow_private=self.settings.allow_private_mirrors,
            actor=_actor(token),
        )
        # After a rename this is where the mirror now lives; the old name is 404.
        where = {"content-location": f"{PREFIX}mirrors/{record.mirror.name}"}
        return ok(self.mirror_json(record, private=True), 200, where)

    async def delete_mirror(
        self, request: Request, params: Params, token: tokens.TokenInfo | None
    ) -> Response:
        await services.remove_mirror(self.sessions, params["name"], actor=_actor(token))
        return Response(status_code=204, headers=NO_STORE)

    async def enable_mirror(
        self, request: Request, params: Params, token: tokens.TokenInfo | None
    ) -> Response:
        record = await services.set_enabled(
            self.sessions, params["name"], True, actor=_actor(token)
        )
        return ok(self.mirror_json(record, private=True))

    async def disable_mirror(
        self, request: Request, params: Params, token: tokens.TokenInfo | None
    ) -> Response:
        record = await services.set_enabled(
            self.sessions, params["name"], False, actor=_actor(token)
        )
        return ok(self.mirror_json(record, private=True))

    async def scan_mirror(self, request: Request, params: Params, token: Any) -> Response:
        """Bring the worker pool's scan job forward; without workers, scan here.

        Scanning in the dispatcher is the single-machine fallback (no ``scan:`` job rows,
        i.e. no worker ever ran); with workers, their leases keep a mirror from being
        scanned twice at once.
        """
        record = await services.get_mirror(self.sessions, params["name"])
        name = record.mirror.name
        key = f"scan:{record.mirror.id}"
        async with self.sessions() as session:
            job = await session.scalar(select(JobRow).where(JobRow.key == key))
            leased = job is not None and job.lease_until > self.state.clock()
        if job is not None:
            if not leased:
                from mirrorhub.workers import leases

                await leases.run_soon(self.sessions, key, self.state.clock())
            body = {"mirror": name, "status": "running" if leased else "queued", "runner": "worker"}
            return ok(body, 202)
        if name in self.scans:
            return ok({"mirror": name, "status": "running", "runner": "dispatcher"}, 202)
        self.scans.add(name)
        task = asyncio.create_task(self._scan(record))
        self.state.tasks.append(task)
        task.add_done_callback(self._scan_done)
        return ok({"mirror": name, "status": "queued", "runner": "dispatcher"}, 202)

    async def _scan(self, record: MirrorRecord) -> None:
        from mirrorhub.workers.mirror_scan import scan_mirror

        try:
            report = await scan_mirror(
                self.sessions, self.settings, record.mirror, clock=self.state.clock
            )
            log.info("API scan of %s: ok=%s", record.mirror.name, report.ok)
        except (MirrorhubError, SQLAlchemyError, OSError) as exc:
            # E.g. the mirror was deleted while it was being scanned: nothing to record.
            log.warning("API scan of %s could not be recorded: %s", record.mirror.name, exc)
        except Exception:
            log.exception("API scan of %s failed", record.mirror.name)
        finally:
            self.scans.discard(record.mirror.name)

    def _scan_done(self, task: asyncio.Task[None]) -> None:
        if task in self.state.tasks:
            self.state.tasks.remove(task)

    # --- files ---

    async def file_decision(self, request: Request, params: Params, token: Any) -> Response:
        try:
            path = normalize_path("/" + params["path"])
        except InvalidPath as exc:
            # No file can have such a path: the resource does not exist (the hot path
            # says 400 because there the path is the whole request).
            raise ApiError(404, f"not a published path: {exc}") from None
        query = request.query_params
        resolved = resolve_client(
            request.client.host if request.client else None,
            request.scope["headers"],
            self.settings.trusted_proxies,
        )
        address = resolved.address
        if "address" in query:
            given = query_value(query, "address")
            parsed = parse_address(given)
            if parsed is None:
                raise ApiError(400, "address must be an IPv4 or IPv6 address",
                               {"address": "not an IP address"})  # fmt: skip
            address = parsed
        scheme = Scheme.HTTPS if request.url.scheme == "https" else Scheme.HTTP
        if resolved.forwarded_proto is not None:
            scheme = Scheme.HTTPS if resolved.forwarded_proto == "https" else Scheme.HTTP
        options = Options(
            scheme=scheme,
            https_only=bool_param(query, "https"),
            country=country_param(query_value(query, "country"), "country")
            if "country" in query
            else None,
            avoid=country_set(query_value(query, "avoid"), "avoid")
            if "avoid" in query
            else frozenset(),
        )
        index = self.state.holder.current
        pos = index.positions.get(path)
        if pos is None:
            what = "a directory" if index.is_dir(path) else "not a published file"
            raise ApiError(404, f"{path or '/'} is {what}")
        client = Client(address, self.state.geo.locate(address))
        now = self.state.clock() if index.config.allow_outdated else None
        # The same load view the hot path uses, so the shares are the ones it applies.
        load = self.load_view()
        decision = index.decide(pos, client, options, self.rng, full=True, now=now, load=load)
        return ok(decision_json(decision, index.sha256_digest(pos), load))

    async def openapi_document(self, request: Request, params: Params, token: Any) -> Response:
        return Response(self.document, media_type="application/json")


_CHALLENGE = {"www-authenticate": 'Bearer realm="mirrorhub"'}
_CHALLENGE_INVALID = {"www-authenticate": 'Bearer realm="mirrorhub", error="invalid_token"'}


def _actor(token: tokens.TokenInfo | None) -> str:
    assert token is not None  # write operations are authenticated by the router
    return f"token:{token.name}"


class PrefixRoute(BaseRoute):
    """Everything under /-/api/ that no earlier route took (the status page's
    /-/api/status comes first); :func:`resolve` answers unknown paths and wrong methods in
    JSON. A plain Route's ``{rest:path}`` would miss paths with a newline in them."""

    def __init__(self, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
        self.app = request_response(endpoint)

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def routes(state: AppState) -> list[BaseRoute]:
    api = Api(state)
    state.extras["api"] = api
    return [PrefixRoute(api.handle)]
