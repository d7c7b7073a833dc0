"""The world map: the shipped outline, the projection, and the SVG it draws."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from importlib import resources

from mirrorhub.worldmap import Dot, outline, world_map

NS = {"svg": "http://www.w3.org/2000/svg"}


def test_outline_is_shipped_small_and_integer() -> None:
    data = resources.files("mirrorhub").joinpath("data/world.json")
    assert len(data.read_bytes()) < 200_000
    o = outline()
    assert len(o.paths) > 150  # Natural Earth 110m has 177 countries; Antarctica dropped
    for d in o.paths:
        assert re.fullmatch(r"(M-?\d+ -?\d+l(-?\d+ -?\d+ ?)+z)+", d), d[:80]


def test_projection_puts_known_places_where_they_belong() -> None:
    o = outline()
    x, y = o.project(0.0, 0.0)
    assert (round(x), round(y)) == (o.width // 2, round(o.north * o.width / 360))
    west, _ = o.project(40.7, -74.0)  # New York
    east, _ = o.project(35.7, 139.7)  # Tokyo
    assert west < o.width / 2 < east
    assert o.project(-89.0, 0.0)[1] == o.height  # clamped to the frame
    assert o.project(0.0, 190.0)[0] == o.project(0.0, -170.0)[0]  # wrapped


def test_map_is_well_formed_with_one_escaped_dot_per_mirror() -> None:
    dots = [
        Dot(52.5, 13.4, "up", "berlin (DE): up"),
        Dot(40.7, -74.0, "down", '<script>alert("x")</script> & co'),
        Dot(-33.9, 151.2, 'x"><script>', "sydney"),
    ]
    svg = str(world_map(dots, label='"map" <of> mirrors'))
    assert "<script>" not in svg
    root = ET.fromstring(svg)  # noqa: S314 (our own output)
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.attrib["aria-label"] == '"map" <of> mirrors'
    circles = root.findall("svg:circle", NS)
    assert len(circles) == 3
    titles = [c.find("svg:title", NS).text for c in circles]  # type: ignore[union-attr]
    assert titles[1] == '<script>alert("x")</script> & co'  # text, not markup
    assert circles[0].attrib["fill"] == "#2e7d32" and circles[1].attrib["fill"] == "#c62828"
    assert circles[2].attrib["fill"] == "#757575"  # an unknown class gets the neutral colour
    for c in circles:
        assert 0 <= float(c.attrib["cx"]) <= outline().width
        assert 0 <= float(c.attrib["cy"]) <= outline().height
    # nothing that would make a request: no href, no url(), no external reference
    assert "href" not in svg and "url(" not in svg


def test_no_outline_edge_jumps_across_the_map() -> None:
    """Rings crossing the antimeridian are unwrapped, not drawn as a line across the map."""
    o = outline()
    for d in o.paths:
        for ring in d.split("z")[:-1]:
            deltas = [int(v) for v in ring.split("l")[1].split()]
            assert all(abs(dx) < o.width / 4 for dx in deltas[::2]), ring[:80]
