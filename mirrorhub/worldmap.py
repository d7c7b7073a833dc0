"""The mirrors on a world map: inline SVG from the Natural Earth outline in ``data/world.json``.

Equirectangular, like the outline (``docs/tools/make_world_outline.py`` decides the frame and
writes it into the file). Every text is escaped; the result references nothing outside itself.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable
from dataclasses import dataclass
from html import escape
from importlib import resources
from typing import Any

from markupsafe import Markup


@dataclass(frozen=True, slots=True)
class Outline:
    width: int
    height: int
    north: float
    south: float
    paths: tuple[str, ...]  # one SVG path per country

    def project(self, lat: float, lon: float) -> tuple[float, float]:
        """(x, y) in the outline's units; latitudes outside the frame stick to its edge."""
        scale = self.width / 360.0
        lat = min(max(lat, self.south), self.north)
        lon = (lon + 180.0) % 360.0 - 180.0
        # height is rounded in the file: keep the southern edge inside the view box
        return (lon + 180.0) * scale, min((self.north - lat) * scale, float(self.height))


@functools.cache
def outline() -> Outline:
    raw: dict[str, Any] = json.loads(
        resources.files("mirrorhub").joinpath("data/world.json").read_text(encoding="utf-8")
    )
    return Outline(
        width=int(raw["width"]),
        height=int(raw["height"]),
        north=float(raw["north"]),
        south=float(raw["south"]),
        paths=tuple(str(c["d"]) for c in raw["countries"]),
    )


@dataclass(frozen=True, slots=True)
class Dot:
    lat: float
    lon: float
    css: str  # status class: up, down, lagging, ...
    title: str  # hover text (escaped here)


# Fill colours as attributes (not CSS) so /-/map.svg looks the same without the stylesheet;
# they match the badge colours of style.css.
COLOURS = {
    "up": "#2e7d32",
    "down": "#c62828",
    "lagging": "#ef6c00",
    "scan-failing": "#6a1b9a",
    "unknown": "#757575",
    "disabled": "#757575",
}


@functools.cache
def _land(o: Outline) -> str:
    # The outline is the same for every page: join it once.
    return (
        f'<rect width="{o.width}" height="{o.height}" fill="#eef3f8"/>'
        f'<path class="land" fill="#d5dbe2" stroke="#ffffff" stroke-width="0.6" '
        f'd="{"".join(o.paths)}"/>'
    )


def world_map(dots: Iterable[Dot], *, label: str = "Map of the mirrors") -> Markup:
    o = outline()
    parts = [
        f'<svg class="worldmap" viewBox="0 0 {o.width} {o.height}" role="img" '
        f'aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
        _land(o),
    ]
    for dot in dots:
        x, y = o.project(dot.lat, dot.lon)
        parts.append(
            f'<circle class="dot {escape(dot.css)}" cx="{x:.1f}" cy="{y:.1f}" r="5" '
            f'fill="{COLOURS.get(dot.css, "#757575")}" stroke="#ffffff" stroke-width="1.5">'
            f"<title>{escape(dot.title)}</title></circle>"
        )
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every text is escaped above
