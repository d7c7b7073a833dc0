"""The JSON API's edges: its errors and answers, and reading a body or a query parameter.

Every refusal is an :class:`ApiError` that the API turns into ``{"error": ..., "fields":
{...}}`` with its status (400 bad input, 413 too large, 415 not JSON).
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from mirrorhub import countries
from mirrorhub.web.openapi import MAX_BODY

NO_STORE = {"cache-control": "no-store"}
_MAX_QUERY_VALUE = 256


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        fields: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields
        self.headers = headers


def error(
    status: int,
    message: str,
    fields: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": message}
    if fields:
        body["fields"] = fields
    return JSONResponse(body, status, headers={**NO_STORE, **(headers or {})})


def ok(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status, headers={**NO_STORE, **(headers or {})})


async def read_json(request: Request) -> Any:
    """The request body as JSON, capped at MAX_BODY bytes; ApiError 400/413/415 otherwise."""
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (
        media.startswith("application/") and media.endswith("+json")
    ):
        raise ApiError(415, "send the body as application/json")
    length = request.headers.get("content-length")
    if length is not None and (not length.isdecimal() or int(length) > MAX_BODY):
        raise ApiError(413, f"the body must be at most {MAX_BODY} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise ApiError(413, f"the body must be at most {MAX_BODY} bytes")
        chunks.append(chunk)
    try:
        return json.loads(b"".join(chunks), parse_constant=_no_constant)
    except RecursionError:
        raise ApiError(400, "the JSON body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, bad UTF-8, huge integers
        raise ApiError(400, f"the body is not valid JSON: {str(exc)[:200]}") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def query_value(query: Any, name: str) -> str:
    value = str(query[name])
    if len(value) > _MAX_QUERY_VALUE:
        raise ApiError(400, f"{name} is too long", {name: "too long"})
    return value


def bool_param(query: Any, name: str) -> bool:
    if name not in query:
        return False
    value = query_value(query, name).lower()
    if value in ("", "1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise ApiError(400, f"{name} must be true or false", {name: "true or false"})


def int_param(query: Any, name: str, default: int, low: int, high: int) -> int:
    if name not in query:
        return default
    value = query_value(query, name)
    if not (value.isascii() and value.isdecimal()) or not low <= int(value) <= high:
        raise ApiError(400, f"{name} must be a whole number from {low} to {high}",
                       {name: f"{low}..{high}"})  # fmt: skip
    return int(value)


def country_set(value: str, name: str) -> frozenset[str]:
    return frozenset(country_param(c, name) for c in value.split(",")) if value else frozenset()


def country_param(value: str, name: str) -> str:
    # Exactly the document's enum (upper case): what the schema refuses, the API refuses.
    code = value
    if code not in countries.COUNTRIES:
        raise ApiError(400, f"{name}: not an ISO 3166 country code", {name: "not a country code"})
    return code
