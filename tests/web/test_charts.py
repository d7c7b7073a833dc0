from __future__ import annotations

import xml.dom.minidom

from mirrorhub.web.charts import bar_chart, line_chart, sparkline

HOSTILE = '<script>alert(1)</script>"&'


def test_charts_are_well_formed_svg_and_escape_labels() -> None:
    for svg in (
        sparkline([0.1, None, 0.9, 1.0], label=HOSTILE),
        line_chart(
            [(HOSTILE, [(0, 1.0), (1, None), (2, 3.0)])], x_labels=[(0, HOSTILE)], title=HOSTILE
        ),
        bar_chart([(HOSTILE, 3.0), ("b", 1.0)], title=HOSTILE),
    ):
        doc = xml.dom.minidom.parseString(str(svg))  # noqa: S318 (our own output)
        assert doc.documentElement.tagName == "svg"
        assert "<script" not in str(svg)


def test_sparkline_breaks_at_gaps() -> None:
    svg = str(sparkline([1.0, None, 1.0]))
    assert svg.count("M") == 2


def test_empty_inputs_do_not_crash() -> None:
    assert "<svg" in str(line_chart([]))
    assert "<svg" in str(bar_chart([]))
    assert "<svg" in str(sparkline([]))
