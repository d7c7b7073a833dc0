"""A mirror's JSON body: the field table, its JSON schema, and the check against it.

Request bodies are checked against the same field table (:data:`MIRROR_FIELDS`) that
renders their schema in the OpenAPI document: a body the document says is wrong is refused,
with the field named, before :mod:`mirrorhub.validation` applies the finer rules (public
host, country codes...).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from mirrorhub.errors import ValidationError
from mirrorhub.validation import FIELDS, MAX_ASN, MAX_CAPACITY, MAX_CONTACT, MAX_NOTES

Schema = dict[str, Any]

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
ITEM_PATTERN = r"^[^\s,]+$"  # one list item per array element: no separators inside


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
