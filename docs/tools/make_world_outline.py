"""Convert Natural Earth 110m countries (TopoJSON from the npm package ``world-atlas@2``) into
``mirrorhub/data/world.json``: one SVG path per country, equirectangular, integer coordinates.

Run once when the outline should change; the output is committed, so nothing downloads at run
time:

    cd "$(mktemp -d)" && npm pack world-atlas@2 && tar xzf world-atlas-2.*.tgz
    python docs/tools/make_world_outline.py package/countries-110m.json mirrorhub/data/world.json

The projection must match :mod:`mirrorhub.worldmap` (it reads WIDTH, NORTH and SOUTH from the
file, so only this script decides them).
"""

from __future__ import annotations

import itertools
import json
import sys
from pathlib import Path
from typing import Any

WIDTH = 1000  # SVG units for 360 degrees of longitude
NORTH, SOUTH = 84.0, -58.0  # latitudes kept; Antarctica is dropped (no mirrors to show there)
SCALE = WIDTH / 360.0


def decode_arcs(topo: dict[str, Any]) -> list[list[tuple[float, float]]]:
    """TopoJSON arcs are quantized and delta-encoded: undo both, giving (lon, lat) points."""
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    arcs = []
    for arc in topo["arcs"]:
        x = y = 0
        points = []
        for dx, dy in arc:
            x += dx
            y += dy
            points.append((x * sx + tx, y * sy + ty))
        arcs.append(points)
    return arcs


def ring_points(
    arcs: list[list[tuple[float, float]]], indexes: list[int]
) -> list[tuple[float, float]]:
    points: list[tuple[float, float]] = []
    for i in indexes:
        arc = arcs[i] if i >= 0 else arcs[~i][::-1]  # ~i: the arc walked backwards
        points.extend(arc if not points else arc[1:])  # consecutive arcs share an end point
    return points


def unwrap(points: list[tuple[float, float]]) -> list[list[tuple[float, float]]]:
    """Rings crossing the antimeridian (Russia, Fiji) would draw a line across the whole map:
    make their longitudes continuous instead, and add a copy shifted by 360 degrees so the
    part beyond the edge shows on the other side (the view box clips both)."""
    out: list[tuple[float, float]] = []
    for lon, lat in points:
        if out:
            prev = out[-1][0]
            while lon - prev > 180:
                lon -= 360
            while prev - lon > 180:
                lon += 360
        out.append((lon, lat))
    lons = [lon for lon, _ in out]
    rings = [out]
    if max(lons) > 180:
        rings.append([(lon - 360, lat) for lon, lat in out])
    if min(lons) < -180:
        rings.append([(lon + 360, lat) for lon, lat in out])
    return rings


def project(lon: float, lat: float) -> tuple[int, int]:
    lat = min(max(lat, SOUTH), NORTH)
    return round((lon + 180.0) * SCALE), round((NORTH - lat) * SCALE)


def ring_path(points: list[tuple[float, float]]) -> str:
    """Relative SVG commands ("M x y l dx dy ... z") after rounding away repeated points."""
    xy: list[tuple[int, int]] = []
    for lon, lat in points:
        p = project(lon, lat)
        if not xy or p != xy[-1]:
            xy.append(p)
    if len(xy) > 1 and xy[0] == xy[-1]:
        xy.pop()
    if len(set(xy)) < 3:
        return ""  # smaller than a unit at this scale
    out = [f"M{xy[0][0]} {xy[0][1]}l"]
    deltas = [f"{b[0] - a[0]} {b[1] - a[1]}" for a, b in itertools.pairwise(xy)]
    out.append(" ".join(deltas))
    out.append("z")
    return "".join(out)


def main(source: Path, target: Path) -> None:
    topo = json.loads(source.read_text())
    arcs = decode_arcs(topo)
    countries = []
    for geometry in topo["objects"]["countries"]["geometries"]:
        name = geometry.get("properties", {}).get("name", "")
        if name == "Antarctica" or geometry.get("type") is None:
            continue
        polygons = geometry["arcs"] if geometry["type"] == "MultiPolygon" else [geometry["arcs"]]
        path = "".join(
            ring_path(part)
            for polygon in polygons
            for ring in polygon
            for part in unwrap(ring_points(arcs, ring))
        )
        if path:
            countries.append({"id": geometry.get("id", ""), "name": name, "d": path})
    out = {
        "source": "Natural Earth 1:110m Admin 0 countries v4.1.0 (public domain), "
        "via the npm package world-atlas@2 (countries-110m.json)",
        "width": WIDTH,
        "height": round((NORTH - SOUTH) * SCALE),
        "north": NORTH,
        "south": SOUTH,
        "countries": countries,
    }
    target.write_text(json.dumps(out, separators=(",", ":"), ensure_ascii=False) + "\n")
    print(f"{len(countries)} countries, {target.stat().st_size:,} bytes -> {target}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
