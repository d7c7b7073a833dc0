"""The mirror form: which fields it has, how a stored mirror fills it, how a post reads back.

Values travel as the strings the user typed, so a form that fails validation comes back
exactly as it was sent, with the reason next to each field (validation.py names them).
"""

from __future__ import annotations

from dataclasses import dataclass

from starlette.datastructures import FormData

from mirrorhub.validation import MirrorInput


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    label: str
    kind: str  # text | url | number | textarea | checkbox
    hint: str = ""


FORM_FIELDS: tuple[Field, ...] = (
    Field("name", "Name", "text", "Short unique name: a-z 0-9 . _ -"),
    Field("https_url", "HTTPS URL", "url", "https://host[:port]/path/ (ending in /)"),
    Field(
        "http_url", "HTTP URL", "url", "http://host[:port]/path/ (an HTTP or HTTPS URL is needed)"
    ),
    Field("rsync_url", "rsync URL", "url", "rsync://host/module/ for scans (optional)"),
    Field("country", "Country", "text", "ISO 3166-1 code, e.g. DE"),
    Field("continent", "Continent", "text", "AF AN AS EU NA OC SA (default: from the country)"),
    Field("latitude", "Latitude", "text", "-90 to 90"),
    Field("longitude", "Longitude", "text", "-180 to 180"),
    Field("asn", "AS number", "text", "e.g. 64500"),
    Field("networks", "Networks", "textarea", "CIDR networks it is close to, space-separated"),
    Field("capacity", "Capacity (Mbit/s)", "number", "bandwidth; the share of traffic"),
    Field("scope", "Scope", "textarea", "sub-trees it carries, e.g. pub/iso/ (empty: all)"),
    Field("excluded_countries", "Excluded countries", "text", "countries it refuses, e.g. CN RU"),
    Field("contact", "Contact", "text", "who runs it (admins and operators only)"),
    Field("notes", "Notes", "textarea", ""),
    Field("enabled", "Enabled (gets traffic)", "checkbox"),
    Field("only_own_networks", "Only serve clients in its networks", "checkbox"),
    Field("only_own_asn", "Only serve clients in its AS", "checkbox"),
    Field("only_own_country", "Only serve clients in its country", "checkbox"),
    Field("only_own_continent", "Only serve clients on its continent", "checkbox"),
)
CHECKBOXES = tuple(f.name for f in FORM_FIELDS if f.kind == "checkbox")
LOCATION_FIELDS = ("country", "continent", "latitude", "longitude", "asn")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, frozenset):
        return " ".join(sorted(value))
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def values_of(data: MirrorInput) -> dict[str, str]:
    """A stored mirror as form strings."""
    return {f.name: _text(getattr(data, f.name)) for f in FORM_FIELDS}


def blank() -> dict[str, str]:
    return values_of(MirrorInput(name=""))


def read(form: FormData, names: tuple[str, ...] | None = None) -> dict[str, str]:
    """The posted fields (all of them, or ``names``); an unticked checkbox is "false"."""
    out: dict[str, str] = {}
    for f in FORM_FIELDS:
        if names is not None and f.name not in names:
            continue
        raw = form.get(f.name)
        if f.kind == "checkbox":
            out[f.name] = "true" if raw is not None else "false"
        else:
            out[f.name] = raw if isinstance(raw, str) else ""
    return out


__all__ = ["CHECKBOXES", "FORM_FIELDS", "LOCATION_FIELDS", "Field", "blank", "read", "values_of"]
