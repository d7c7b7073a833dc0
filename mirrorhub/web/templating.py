"""Jinja2 for the pages under /-/: autoescaping everywhere, shared filters, one base layout.

Templates live in the top-level ``templates/`` directory; assets in ``mirrorhub/web/static``
are served under ``/-/static/``. No page loads anything from another origin.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from starlette.templating import Jinja2Templates

TEMPLATES_DIR = Path(__file__).resolve().parents[2] / "templates"
STATIC_DIR = Path(__file__).resolve().parent / "static"

# Content-Security-Policy for every /-/ response: nothing from elsewhere, no inline script.
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def human_bytes(value: float | None) -> str:
    if value is None:
        return "-"
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    n = float(value)
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024
        i += 1
    return f"{n:.0f} {units[i]}" if i == 0 or n >= 100 else f"{n:.1f} {units[i]}"


def human_duration(seconds: float | None) -> str:
    """``3 s``, ``5 min``, ``2 h 5 min``, ``3 d``."""
    if seconds is None or math.isnan(seconds):
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        h, rest = divmod(s, 3600)
        return f"{h} h {rest // 60} min" if rest >= 60 else f"{h} h"
    return f"{s // 86400} d"


def ago(timestamp: float | datetime | None, now: float | None = None) -> str:
    if timestamp is None:
        return "never"
    t = timestamp.timestamp() if isinstance(timestamp, datetime) else timestamp
    return human_duration((now if now is not None else time.time()) - t) + " ago"


def utc(timestamp: float | datetime | None) -> str:
    if timestamp is None:
        return "-"
    d = timestamp if isinstance(timestamp, datetime) else datetime.fromtimestamp(timestamp, UTC)
    return d.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def make_templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(human_bytes=human_bytes, human_duration=human_duration, ago=ago, utc=utc)
    return Jinja2Templates(env=env)
