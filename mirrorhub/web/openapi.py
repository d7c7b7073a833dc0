"""The API's contract: operations, JSON schemas, the OpenAPI 3.1 document.

One table (:data:`OPERATIONS`) lists every operation; :mod:`mirrorhub.web.api` routes and
checks methods from it and this module renders the document from it, so the two cannot
drift. The request bodies' schemas come from :mod:`mirrorhub.web.api_body`'s field table,
which also checks the bodies.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mirrorhub import __version__, countries
from mirrorhub.web.api_body import mirror_input_schema

Schema = dict[str, Any]

MAX_BODY = 256 * 1024  # bytes; the largest valid mirror (1000 IPv6 networks) is ~50 KB


# --- response schemas -------------------------------------------------------------------------


def _nullable(type_: str) -> Schema:
    return {"type": [type_, "null"]}


def _obj(props: Mapping[str, Schema], required: list[str] | None = None) -> Schema:
    return {"type": "object", "properties": dict(props), "required": required or list(props)}


_STR, _INT, _NUM, _BOOL = ({"type": t} for t in ("string", "integer", "number", "boolean"))
_STR_LIST: Schema = {"type": "array", "items": _STR}

ERROR: Schema = {
    "type": "object",
    "properties": {
        "error": {"type": "string", "description": "What went wrong, in one sentence."},
        "fields": {
            "type": "object",
            "additionalProperties": {"type": "string"},
            "description": "Per-field reasons, for invalid input.",
        },
    },
    "required": ["error"],
}

LOAD: Schema = {
    **_obj(
        {
            "mbps": {**_NUM, "description": "Estimated Mbit/s the dispatchers sent it."},
            "capacity_mbps": {**_INT, "description": "The capacity declared for it."},
            "utilisation": {**_NUM, "description": "mbps / capacity_mbps (may pass 1)."},
            "factor": {**_NUM, "description": "Weight multiplier applied now; 1 = not held back."},
            "held_back": {**_BOOL, "description": "Near capacity: it gets less new traffic."},
        }
    ),
    "description": "The mirror's current load: the fleet-wide sliding-window estimate of the "
    "traffic the dispatchers redirected to it, not a measurement at the mirror; 0 while "
    "there is no estimate.",
}

MIRROR: Schema = _obj(
    {
        "name": _STR,
        "enabled": _BOOL,
        "http_url": _nullable("string"),
        "https_url": _nullable("string"),
        "rsync_url": _nullable("string"),
        "country": _nullable("string"),
        "continent": _nullable("string"),
        "latitude": _nullable("number"),
        "longitude": _nullable("number"),
        "asn": _nullable("integer"),
        "networks": _STR_LIST,
        "capacity": _INT,
        "scope": _STR_LIST,
        "only_own_networks": _BOOL,
        "only_own_asn": _BOOL,
        "only_own_country": _BOOL,
        "only_own_continent": _BOOL,
        "excluded_countries": _STR_LIST,
        "health": {"type": "string", "enum": ["unknown", "up", "down"]},
        "lagging": _BOOL,
        "lag_seconds": _nullable("number"),
        "scan_failed": _BOOL,
        "last_good_scan": {**_nullable("number"), "description": "POSIX seconds"},
        "last_scan_error": _STR,
        "created_at": {"type": "string", "format": "date-time"},
        "updated_at": {"type": "string", "format": "date-time"},
        "load": {"$ref": "#/components/schemas/Load"},
        "contact": {**_STR, "description": "Only for requests with a valid token."},
        "notes": {**_STR, "description": "Only for requests with a valid token."},
    }
)
MIRROR["required"] = [k for k in MIRROR["required"] if k not in ("contact", "notes")]

CANDIDATE: Schema = _obj(
    {
        "mirror": _STR,
        "url": _STR,
        "country": _nullable("string"),
        "tier": _STR,
        "distance_km": _nullable("number"),
        "share": _NUM,
        "capacity_mbps": _INT,
        "load": {"$ref": "#/components/schemas/Load"},
    }
)

DECISION: Schema = _obj(
    {
        "path": _STR,
        "outcome": {"type": "string", "description": "mirror, origin or not found"},
        "origin_reason": _nullable("string"),
        "file": {
            "anyOf": [
                _obj({"size": _INT, "mtime": _INT, "sha256": _nullable("string")}),
                {"type": "null"},
            ]
        },
        "client": _obj(
            {
                "address": _STR,
                "country": _nullable("string"),
                "continent": _nullable("string"),
                "asn": _nullable("integer"),
                "latitude": _nullable("number"),
                "longitude": _nullable("number"),
            }
        ),
        "options": _obj(
            {
                "scheme": {"type": "string", "enum": ["http", "https"]},
                "https_only": _BOOL,
                "country": _nullable("string"),
                "avoid": _STR_LIST,
            }
        ),
        "chosen": {"anyOf": [{"$ref": "#/components/schemas/Candidate"}, {"type": "null"}]},
        "ranked": {"type": "array", "items": {"$ref": "#/components/schemas/Candidate"}},
        "excluded": {
            "type": "array",
            "items": _obj(
                {
                    "mirror": _STR,
                    "country": _nullable("string"),
                    "reason": _STR,
                    "load": {"$ref": "#/components/schemas/Load"},
                }
            ),
        },
    }
)

SCAN_REQUESTED: Schema = _obj(
    {
        "mirror": _STR,
        "status": {"type": "string", "enum": ["queued", "running"]},
        "runner": {
            "type": "string",
            "enum": ["worker", "dispatcher"],
            "description": "worker: the worker pool's scan job was brought forward; "
            "dispatcher: no worker runs scans, so this process scans in the background.",
        },
    }
)


def _total(key: str) -> Schema:
    return _obj({key: _nullable("string"), "downloads": _INT, "bytes": _INT})


_DAY = _obj({"day": {"type": "string", "format": "date"}, "downloads": _INT, "bytes": _INT})
_MONTH = _obj({"month": {"type": "string", "format": "date"}, "downloads": _INT, "bytes": _INT})
_PERIOD = {
    "from": {"type": "string", "format": "date"},
    "to": {"type": "string", "format": "date"},
    "days": _INT,
}
STATS_SUMMARY: Schema = _obj(
    {
        **_PERIOD,
        "downloads": _INT,
        "bytes": _INT,
        "files": {"type": "array", "items": _obj({"path": _STR, "downloads": _INT, "bytes": _INT})},
        "mirrors": {"type": "array", "items": _total("mirror")},
        "countries": {"type": "array", "items": _total("country")},
        "per_day": {"type": "array", "items": _DAY},
    }
)


def _stats_list(item: Schema) -> Schema:
    return _obj({**_PERIOD, "items": {"type": "array", "items": item}})


COMPONENTS: dict[str, Schema] = {
    "Error": ERROR,
    "Load": LOAD,
    "Mirror": MIRROR,
    "MirrorList": _obj({"mirrors": {"type": "array", "items": {"$ref": "#/components/schemas/Mirror"}}}),
    "MirrorCreate": mirror_input_schema(partial=False),
    "MirrorUpdate": mirror_input_schema(partial=True),
    "Candidate": CANDIDATE,
    "Decision": DECISION,
    "ScanRequested": SCAN_REQUESTED,
    "StatsSummary": STATS_SUMMARY,
    "StatsFiles": _stats_list(_obj({"path": _STR, "downloads": _INT, "bytes": _INT})),
    "StatsMirrors": _stats_list(_total("mirror")),
    "StatsCountries": _stats_list(_total("country")),
    "StatsDays": _stats_list(_DAY),
    "StatsMonths": _obj({"items": {"type": "array", "items": _MONTH}}),
}  # fmt: skip


BODY_EXAMPLES: dict[str, Schema] = {
    "MirrorCreate": {
        "name": "example",
        "https_url": "https://mirror.example.org/pub/",
        "rsync_url": "rsync://mirror.example.org/pub/",
        "country": "DE",
        "capacity": 10000,
        "scope": ["iso/"],
    },
    "MirrorUpdate": {"capacity": 2000, "excluded_countries": ["KP"], "notes": "moved to 10G"},
}

# --- operations -------------------------------------------------------------------------------

# status -> description; every error answer has the Error body.
ERRORS = {
    400: "Malformed request: bad JSON, a bad query parameter or path.",
    401: "A token is missing, unknown or revoked.",
    403: "The client address may not use this endpoint.",
    404: "No such mirror, file or resource.",
    405: "The method is not allowed on this path.",
    409: "A mirror with that name already exists.",
    413: f"The body is larger than {MAX_BODY} bytes.",
    415: "The body is not application/json.",
    422: "The body does not match the schema or the field rules.",
    503: "The database cannot be reached; try again.",
}


@dataclass(frozen=True, slots=True)
class Operation:
    method: str
    path: str  # OpenAPI template, e.g. /-/api/mirrors/{name}
    operation_id: str
    summary: str
    ok: int  # the success status
    ok_schema: str | None  # component name; None = no body
    errors: tuple[int, ...]
    auth: bool = False  # write operations need a bearer token
    body: str | None = None  # request body component
    parameters: tuple[Schema, ...] = ()
    ok_media: str = "application/json"
    description: str = ""
    ours: bool = True  # False: served by another module, listed here for the document
    tags: tuple[str, ...] = field(default=())
    links: tuple[str, ...] = ()  # operations that take this answer's "name"


def _path_param(name: str, description: str, schema: Schema | None = None) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema or _STR,
    }


def _query(name: str, description: str, schema: Schema) -> Schema:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}  # fmt: skip


ADDRESS: Schema = {
    "anyOf": [{"type": "string", "format": "ipv4"}, {"type": "string", "format": "ipv6"}]
}
COUNTRY: Schema = {"type": "string", "enum": sorted(countries.COUNTRIES)}
NAME_PARAM = _path_param("name", "The mirror's name (case-insensitive).")
_DAYS = _query("days", "The last N UTC days, today included (1..366).",
               {"type": "integer", "minimum": 1, "maximum": 366, "default": 30})  # fmt: skip
_LIMIT = _query("limit", "At most this many entries (1..1000).",
                {"type": "integer", "minimum": 1, "maximum": 1000, "default": 20})  # fmt: skip
_READ_ERRORS = (400, 401, 405, 503)
_NAMED = (400, 401, 404, 405, 503)
_WRITE = (400, 401, 405, 413, 415, 422, 503)

_NAMED_OPS = ("getMirror", "editMirror", "enableMirror", "disableMirror", "scanMirror",
              "deleteMirror")  # fmt: skip

OPERATIONS: tuple[Operation, ...] = (
    Operation("get", "/-/api/mirrors", "listMirrors", "Every mirror, by name", 200,
              "MirrorList", _READ_ERRORS, tags=("mirrors",)),
    Operation("post", "/-/api/mirrors", "createMirror", "Register a mirror", 201, "Mirror",
              (*_WRITE, 409), auth=True, body="MirrorCreate", tags=("mirrors",),
              links=_NAMED_OPS),
    Operation("get", "/-/api/mirrors/{name}", "getMirror", "One mirror", 200, "Mirror",
              _NAMED, parameters=(NAME_PARAM,), tags=("mirrors",)),
    Operation("patch", "/-/api/mirrors/{name}", "editMirror",
              "Change the given fields; null or \"\" clears an optional one; name renames "
              "(Content-Location gives the new URL, the old one is 404)",
              200, "Mirror", (*_WRITE, 404, 409), auth=True, body="MirrorUpdate",
              parameters=(NAME_PARAM,), tags=("mirrors",)),
    Operation("delete", "/-/api/mirrors/{name}", "deleteMirror",
              "Delete a mirror with its scan and probe history", 204, None,
              (400, 401, 404, 405, 503), auth=True, parameters=(NAME_PARAM,),
              tags=("mirrors",)),
    Operation("post", "/-/api/mirrors/{name}/enable", "enableMirror", "Enable a mirror", 200,
              "Mirror", _NAMED, auth=True, parameters=(NAME_PARAM,), tags=("mirrors",)),
    Operation("post", "/-/api/mirrors/{name}/disable", "disableMirror",
              "Disable a mirror: no traffic, still scanned", 200, "Mirror", _NAMED,
              auth=True, parameters=(NAME_PARAM,), tags=("mirrors",)),
    Operation("post", "/-/api/mirrors/{name}/scan", "scanMirror",
              "Request a scan of the mirror; it runs in the background", 202,
              "ScanRequested", _NAMED, auth=True, parameters=(NAME_PARAM,),
              tags=("mirrors",)),
    Operation("get", "/-/api/files/{path}", "fileDecision",
              "The selection decision for a published file and a client address", 200,
              "Decision", (400, 401, 404, 405),
              parameters=(
                  _path_param("path", "The published path, without a leading slash; "
                              "slashes may be sent as they are."),
                  _query("address", "The client address to decide for (default: the caller, "
                         "per the trusted-proxy rules).", ADDRESS),
                  _query("country", "Pretend the client is in this country.", COUNTRY),
                  {**_query("avoid", "Countries whose mirrors to avoid, comma-separated.",
                            {"type": "array", "items": COUNTRY}),
                   "style": "form", "explode": False},
                  _query("https", "Only mirrors that offer HTTPS.", _BOOL),
              ), tags=("files",)),
    Operation("get", "/-/api/stats", "statsSummary",
              "Download totals, top files, per mirror, per country and per day", 200,
              "StatsSummary", _READ_ERRORS, parameters=(_DAYS, _LIMIT), tags=("stats",)),
    Operation("get", "/-/api/stats/files", "statsFiles", "Most downloaded files", 200,
              "StatsFiles", _READ_ERRORS, parameters=(_DAYS, _LIMIT), tags=("stats",)),
    Operation("get", "/-/api/stats/mirrors", "statsMirrors",
              "Downloads per mirror (mirror null: the origin)", 200, "StatsMirrors",
              _READ_ERRORS, parameters=(_DAYS,), tags=("stats",)),
    Operation("get", "/-/api/stats/countries", "statsCountries",
              "Downloads per client country (null: unknown)", 200, "StatsCountries",
              _READ_ERRORS, parameters=(_DAYS,), tags=("stats",)),
    Operation("get", "/-/api/stats/days", "statsDays", "Downloads per day", 200,
              "StatsDays", _READ_ERRORS, parameters=(_DAYS,), tags=("stats",)),
    Operation("get", "/-/api/stats/months", "statsMonths",
              "Downloads per month since the beginning", 200, "StatsMonths", _READ_ERRORS,
              tags=("stats",)),
    Operation("get", "/-/api/openapi.json", "openapi", "This document", 200, None, (),
              ok_media="application/json", tags=("meta",)),
    Operation("get", "/-/api/status", "status", "Mirror health as the status page shows it",
              200, None, (), ours=False, tags=("meta",),
              description="Served by the status page (mirrorhub.web.pages)."),
    Operation("get", "/-/metrics", "metrics", "Prometheus metrics", 200, None, (403,),
              ok_media="text/plain", tags=("meta",),
              description="Only for the addresses in MIRRORHUB_METRICS_ALLOW."),
)  # fmt: skip


def _operation_doc(op: Operation) -> Schema:
    doc: Schema = {"operationId": op.operation_id, "summary": op.summary}
    if op.description:
        doc["description"] = op.description
    if op.tags:
        doc["tags"] = list(op.tags)
    if op.parameters:
        doc["parameters"] = list(op.parameters)
    if op.body is not None:
        media: Schema = {"schema": {"$ref": f"#/components/schemas/{op.body}"}}
        if op.body in BODY_EXAMPLES:
            media["example"] = BODY_EXAMPLES[op.body]
        doc["requestBody"] = {"required": True, "content": {"application/json": media}}
    ok: Schema = {"description": "Success."}
    if op.ok_schema is not None:
        ok["content"] = {op.ok_media: {"schema": {"$ref": f"#/components/schemas/{op.ok_schema}"}}}
    elif op.ok != 204:
        ok["content"] = {op.ok_media: {"schema": {} if op.ok_media != "application/json"
                                                   else {"type": "object"}}}  # fmt: skip
    if op.links:
        ok["links"] = {
            target: {"operationId": target, "parameters": {"name": "$response.body#/name"}}
            for target in op.links
        }
    if op.ok == 202:
        ok["description"] = "Accepted: the scan runs in the background."
    responses: Schema = {str(op.ok): ok}
    for status in op.errors:
        responses[str(status)] = {
            "description": ERRORS[status],
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
        }
    doc["responses"] = responses
    if op.auth:
        doc["security"] = [{"bearerToken": []}]
    return doc


def build_document(public_url: str | None = None) -> Schema:
    """The OpenAPI 3.1 document for :data:`OPERATIONS`."""
    paths: dict[str, Schema] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation_doc(op)
    doc: Schema = {
        "openapi": "3.1.0",
        "info": {
            "title": "mirrorhub API",
            "version": __version__,
            "description": "Read mirrors, decisions and download statistics; manage mirrors "
            "with a token from `mirrorhub token add NAME` (Authorization: Bearer TOKEN). "
            "Errors are JSON objects {error, fields?}.",
        },
        "paths": paths,
        "components": {
            "schemas": COMPONENTS,
            "securitySchemes": {
                "bearerToken": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from `mirrorhub token add NAME`.",
                }
            },
        },
    }
    if public_url:
        doc["servers"] = [{"url": public_url.rstrip("/")}]
    return doc


def templates() -> dict[str, dict[str, Operation]]:
    """OpenAPI path -> method (upper case) -> operation, for the router's method checks."""
    out: dict[str, dict[str, Operation]] = {}
    for op in OPERATIONS:
        out.setdefault(op.path, {})[op.method.upper()] = op
    return out
