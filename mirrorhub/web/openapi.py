"""The API's contract: operations, JSON schemas, the OpenAPI 3.1 document, body validation.

One table (:data:`OPERATIONS`) lists every operation; :mod:`mirrorhub.web.api` routes and
checks methods from it and this module renders the document from it, so the two cannot
drift. Request bodies are checked against the same field table (:data:`MIRROR_FIELDS`) that
renders their schema: a body the document says is wrong is refused, with the field named,
before :mod:`mirrorhub.validation` applies the finer rules (public host, country codes...).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mirrorhub import __version__, countries
from mirrorhub.errors import ValidationError
from mirrorhub.validation import FIELDS, MAX_ASN, MAX_CAPACITY, MAX_CONTACT, MAX_NOTES

Schema = dict[str, Any]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ITEM_PATTERN = r"^[^\s,]+$"  # one list item per array element: no separators inside
MAX_BODY = 256 * 1024  # bytes; the largest valid mirror (1000 IPv6 networks) is ~50 KB


# --- request body: mirror fields --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BodyField:
    name: str
    type: str  # "string" | "integer" | "number" | "boolean" | "list"
    nullable: bool  # null clears the field (back to its default)
    description: str
    pattern: str | None = None
    max_length: int | None = None
    minimum: float | None = None
    maximum: float | None = None

    def schema(self) -> Schema:
        if self.type == "list":
            out: Schema = {
                "type": "array",
                "items": {"type": "string", "pattern": ITEM_PATTERN},
            }
        else:
            out = {"type": self.type}
            if self.pattern is not None:
                out["pattern"] = self.pattern
            if self.max_length is not None:
                out["maxLength"] = self.max_length
            if self.minimum is not None:
                out["minimum"] = self.minimum
            if self.maximum is not None:
                out["maximum"] = self.maximum
        if self.nullable:
            out = {"anyOf": [out, {"type": "null"}]}
        return {**out, "description": self.description}


def _f(name: str, type_: str, description: str, nullable: bool = True, **kw: Any) -> BodyField:
    return BodyField(name, type_, nullable, description, **kw)


MIRROR_FIELDS: tuple[BodyField, ...] = (
    _f("name", "string", "Unique name, case-insensitive, stored in lower case.", False,
       pattern=NAME_PATTERN),
    _f("http_url", "string", "Base URL for http:// downloads."),
    _f("https_url", "string", "Base URL for https:// downloads."),
    _f("rsync_url", "string", "rsync://host/module/ URL the scanner lists."),
    _f("country", "string", "ISO 3166-1 alpha-2 country code."),
    _f("continent", "string", "AF AN AS EU NA OC SA (default: from the country)."),
    _f("latitude", "number", "Degrees, -90..90 (with longitude).", minimum=-90, maximum=90),
    _f("longitude", "number", "Degrees, -180..180 (with latitude).", minimum=-180, maximum=180),
    _f("asn", "integer", "Autonomous system number.", minimum=1, maximum=MAX_ASN),
    _f("networks", "list", "Networks (CIDR) the mirror is close to or serves."),
    _f("capacity", "integer", "Bandwidth in Mbit/s: the selection weight.", False,
       minimum=1, maximum=MAX_CAPACITY),
    _f("enabled", "boolean", "Whether the mirror gets traffic.", False),
    _f("only_own_networks", "boolean", "Serve only clients in its networks.", False),
    _f("only_own_asn", "boolean", "Serve only clients in its AS.", False),
    _f("only_own_country", "boolean", "Serve only clients in its country.", False),
    _f("only_own_continent", "boolean", "Serve only clients on its continent.", False),
    _f("excluded_countries", "list", "Country codes the mirror refuses to serve."),
    _f("scope", "list", "Published sub-trees it carries (empty: everything)."),
    _f("contact", "string", "Who runs it (shown to token holders only).",
       max_length=MAX_CONTACT),
    _f("notes", "string", "Free-text notes (shown to token holders only).",
       max_length=MAX_NOTES),
)  # fmt: skip
_BY_NAME = {f.name: f for f in MIRROR_FIELDS}
assert set(_BY_NAME) == set(FIELDS), "MIRROR_FIELDS must cover validation.MirrorInput"


def mirror_input_schema(*, partial: bool) -> Schema:
    schema: Schema = {
        "type": "object",
        "properties": {f.name: f.schema() for f in MIRROR_FIELDS},
        "additionalProperties": False,
    }
    if not partial:
        schema["required"] = ["name"]
    return schema


def body_to_fields(body: object, *, partial: bool) -> dict[str, str | None]:
    """Check a decoded JSON body against the mirror schema; the strings the services take.

    Raises ValidationError naming every field that does not match the schema.
    """
    if not isinstance(body, dict):
        raise ValidationError({"body": "must be a JSON object"})
    errors: dict[str, str] = {}
    out: dict[str, str | None] = {}
    for key, value in body.items():
        spec = _BY_NAME.get(key)
        if spec is None:
            errors[_printable(key)] = "unknown field"
            continue
        try:
            out[key] = _convert(spec, value)
        except ValueError as exc:
            errors[key] = str(exc)
    if not partial and "name" not in body:
        errors["name"] = "required"
    if errors:
        raise ValidationError(errors)
    return out


def _printable(key: str) -> str:
    # Field names come back in the error: keep them short and safe to show.
    return key[:64].encode("ascii", "backslashreplace").decode("ascii")


def _convert(spec: BodyField, value: object) -> str | None:
    if value is None:
        if not spec.nullable:
            raise ValueError("must not be null")
        return None
    kind = spec.type
    if kind == "boolean":
        if not isinstance(value, bool):
            raise ValueError("must be true or false")
        return "true" if value else "false"
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"must be a{'n integer' if kind == 'integer' else ' number'}")
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValueError("must be a finite number")
            if kind == "integer":
                if not value.is_integer():
                    raise ValueError("must be an integer")
                value = int(value)
        if spec.minimum is not None and value < spec.minimum:
            raise ValueError(f"must be at least {spec.minimum:g}")
        if spec.maximum is not None and value > spec.maximum:
            raise ValueError(f"must be at most {spec.maximum:g}")
        return repr(value)
    if kind == "list":
        if not isinstance(value, list):
            raise ValueError("must be an array of strings")
        for item in value:
            if not isinstance(item, str) or not re.fullmatch(ITEM_PATTERN[1:-1], item):
                raise ValueError("each item must be a string without spaces or commas")
            _check_text(item)
        return " ".join(value)
    if not isinstance(value, str):
        raise ValueError("must be a string")
    _check_text(value)
    if spec.pattern is not None and not re.fullmatch(spec.pattern[1:-1], value):
        raise ValueError(f"must match {spec.pattern}")
    if spec.max_length is not None and len(value) > spec.max_length:
        raise ValueError(f"at most {spec.max_length} characters")
    return value


def _check_text(value: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode (no lone surrogates)") from None


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
