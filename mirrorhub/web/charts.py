"""Server-rendered SVG charts (pure): sparklines, line charts and bar charts.

Every label is escaped; the output is a complete ``<svg>`` element ready for a template's
``|safe`` (or ``markupsafe.Markup``). No script, no external reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

from markupsafe import Markup


def sparkline(
    values: Sequence[float | None],
    *,
    width: int = 120,
    height: int = 24,
    low: float = 0.0,
    high: float = 1.0,
    label: str = "",
) -> Markup:
    """A small line over ``values`` (None = no data, a gap), scaled to [low, high]."""
    n = len(values)
    step = width / max(n - 1, 1)
    parts: list[str] = []
    pen_up = True
    for i, v in enumerate(values):
        if v is None:
            pen_up = True
            continue
        y = height - 1 - (min(max(v, low), high) - low) / ((high - low) or 1) * (height - 2)
        parts.append(f"{'M' if pen_up else 'L'}{i * step:.1f},{y:.1f}")
        pen_up = False
    path = " ".join(parts)
    return Markup(  # noqa: S704 - every interpolated label is escaped above
        f'<svg class="sparkline" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}" role="img" aria-label="{escape(label)}">'
        f'<path d="{path}" fill="none" stroke="currentColor" stroke-width="1.5"/></svg>'
    )


def line_chart(
    series: Sequence[tuple[str, Sequence[tuple[float, float | None]]]],
    *,
    width: int = 640,
    height: int = 200,
    y_label: str = "",
    x_labels: Sequence[tuple[float, str]] = (),
    title: str = "",
) -> Markup:
    """Lines of (x, y) points per named series, axes from 0 to the largest value."""
    pad_l, pad_b, pad_t, pad_r = 48, 24, 10, 10
    xs = [x for _, pts in series for x, _ in pts]
    ys = [y for _, pts in series for _, y in pts if y is not None]
    x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
    y1 = max(ys) if ys else 1.0
    y1 = y1 or 1.0
    w, h = width - pad_l - pad_r, height - pad_t - pad_b

    def px(x: float) -> float:
        return pad_l + (x - x0) / ((x1 - x0) or 1) * w

    def py(y: float) -> float:
        return pad_t + h - y / y1 * h

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title or y_label)}">',
        f'<line x1="{pad_l}" y1="{pad_t + h}" x2="{pad_l + w}" y2="{pad_t + h}" stroke="#999"/>',
        f'<line x1="{pad_l}" y1="{pad_t}" x2="{pad_l}" y2="{pad_t + h}" stroke="#999"/>',
        f'<text x="4" y="{pad_t + 10}" font-size="11">{escape(_tick(y1))}</text>',
        f'<text x="4" y="{pad_t + h}" font-size="11">0</text>',
    ]
    if y_label:
        out.append(
            f'<text x="{pad_l + 4}" y="{pad_t + 10}" font-size="11">{escape(y_label)}</text>'
        )
    for x, text in x_labels:
        out.append(
            f'<text x="{px(x):.1f}" y="{height - 6}" font-size="11" text-anchor="middle">'
            f"{escape(text)}</text>"
        )
    palette = ("#1a5fb4", "#c62828", "#2e7d32", "#ef6c00", "#6a1b9a", "#00838f")
    for n, (name, pts) in enumerate(series):
        d: list[str] = []
        pen_up = True
        for x, y in pts:
            if y is None:
                pen_up = True
                continue
            d.append(f"{'M' if pen_up else 'L'}{px(x):.1f},{py(y):.1f}")
            pen_up = False
        colour = palette[n % len(palette)]
        out.append(
            f'<path d="{" ".join(d)}" fill="none" stroke="{colour}" stroke-width="1.5">'
            f"<title>{escape(name)}</title></path>"
        )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - labels escaped when added


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    width: int = 640,
    bar_height: int = 18,
    value_format: str = "{:,.0f}",
    title: str = "",
) -> Markup:
    """Horizontal bars, one per (label, value), longest first as given."""
    top = max((v for _, v in bars), default=0.0) or 1.0
    label_w = 200
    height = bar_height * len(bars) + 4
    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" role="img" '
        f'aria-label="{escape(title)}">'
    ]
    for i, (label, value) in enumerate(bars):
        y = i * bar_height + 2
        length = max(0.0, value) / top * (width - label_w - 90)
        out.append(
            f'<text x="{label_w - 6}" y="{y + bar_height - 5}" font-size="12" '
            f'text-anchor="end">{escape(label[:40])}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{length:.1f}" height="{bar_height - 4}" '
            f'fill="#1a5fb4"><title>{escape(label)}</title></rect>'
            f'<text x="{label_w + length + 4:.1f}" y="{y + bar_height - 5}" font-size="12">'
            f"{escape(value_format.format(value))}</text>"
        )
    out.append("</svg>")
    return Markup("".join(out))  # noqa: S704 - labels escaped when added


def _tick(value: float) -> str:
    if value >= 1e9:
        return f"{value / 1e9:.1f}G"
    if value >= 1e6:
        return f"{value / 1e6:.1f}M"
    if value >= 1e3:
        return f"{value / 1e3:.1f}k"
    return f"{value:.3g}"
