"""Charts as standalone SVG: deterministic text, no plotting library, readable in a paper and in the HTML site.

A `Chart` is series of (x, y) points, optionally with a vertical interval, on a linear or log x axis, or on
categories (one slot per category, a series per measure). `svg(chart)` draws it with a title, axes, ticks, a legend
and a native tooltip (`<title>`) on every point; in the HTML site a few lines of script let a click on a legend
entry hide or show its series (`data-series`). Every label is escaped: method names and titles are data.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    label: str = ""  # shown in the tooltip
    interval: tuple[float, float] | None = None


@dataclass
class Series:
    name: str
    points: list[Point]
    line: bool = True  # join the points (sorted by x); False: markers only


@dataclass
class Chart:
    """`categories`: x is then a category index (0, 1, …) and the axis shows these names."""

    id: str
    title: str
    x_label: str
    y_label: str
    series: list[Series]
    x_log: bool = False
    categories: list[str] | None = None
    note: str = ""
    hlines: list[tuple[float, str]] = field(default_factory=list)  # reference lines (y, label)
    dodge: bool = True  # on categories: series side by side within a slot (False: a trend, one x per category)

    @property
    def empty(self) -> bool:
        return not any(s.points for s in self.series)


W, H = 640, 380
LEFT, RIGHT, TOP = 64, 180, 40


def _bottom(chart: Chart) -> int:
    if not chart.categories:
        return 52
    return 30 + min(120, 6 * max(len(c) for c in chart.categories))  # room for slanted category names


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    ticks = []
    for e in range(math.floor(lo), math.ceil(hi) + 1):
        for m in (1, 2, 5) if hi - lo < 2.5 else (1,):
            t = math.log10(m) + e
            if lo - 1e-9 <= t <= hi + 1e-9:
                ticks.append(t)
    return ticks


def _label(value: float) -> str:
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.0e}"
    return f"{value:g}"


def svg(chart: Chart) -> str:
    """The chart as an SVG document (also valid inline in HTML)."""
    bottom = _bottom(chart)
    width, height = W, H + bottom - 52
    pw, ph = width - LEFT - RIGHT, height - TOP - bottom
    tx = (lambda v: math.log10(v)) if chart.x_log else (lambda v: v)
    points = [p for s in chart.series for p in s.points if not chart.x_log or p.x > 0]
    xs = [tx(p.x) for p in points] or [0.0, 1.0]
    ys = [v for p in points for v in (p.y, *(p.interval or ()))] + [y for y, _ in chart.hlines]
    ys = [y for y in ys if math.isfinite(y)] or [0.0, 1.0]
    if chart.categories:
        x0, x1 = -0.5, len(chart.categories) - 0.5
    else:
        x0, x1 = min(xs), max(xs)
        pad = (x1 - x0) * 0.05 or 0.5
        x0, x1 = x0 - pad, x1 + pad
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or (abs(y0) * 0.1 or 0.5)
    y0, y1 = y0 - pad, y1 + pad

    def px(v: float) -> float:
        return LEFT + (v - x0) / (x1 - x0) * pw

    def py(v: float) -> float:
        return TOP + (y1 - v) / (y1 - y0) * ph

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" id="chart-{escape(chart.id)}" '
           f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
           f'aria-label="{escape(chart.title)}" font-family="sans-serif" font-size="11">',
           f"<title>{escape(chart.title)}</title>",
           f'<rect x="0" y="0" width="{width}" height="{height}" fill="#fff"/>',
           f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{escape(chart.title)}</text>']
    # axes and ticks
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>')
    for t in _nice_ticks(y0, y1):
        if y0 <= t <= y1:
            out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(t):.1f}" y2="{py(t):.1f}" stroke="#eee"/>'
                       f'<text x="{LEFT - 6}" y="{py(t) + 4:.1f}" text-anchor="end">{escape(_label(t))}</text>')
    if chart.categories:
        for i, name in enumerate(chart.categories):
            x = px(i)
            out.append(f'<text transform="translate({x:.1f},{TOP + ph + 12}) rotate(35)" text-anchor="start">'
                       f"{escape(name)}</text>")
    else:
        for t in _log_ticks(x0, x1) if chart.x_log else _nice_ticks(x0, x1):
            if x0 <= t <= x1:
                label = _label(10 ** t if chart.x_log else t)
                out.append(f'<line x1="{px(t):.1f}" x2="{px(t):.1f}" y1="{TOP}" y2="{TOP + ph}" stroke="#eee"/>'
                           f'<text x="{px(t):.1f}" y="{TOP + ph + 16}" text-anchor="middle">{escape(label)}</text>')
    x_title = chart.x_label + (" (log scale)" if chart.x_log else "")
    out.append(f'<text x="{LEFT + pw / 2:.1f}" y="{height - 8}" text-anchor="middle">{escape(x_title)}</text>')
    out.append(f'<text transform="translate(16,{TOP + ph / 2:.1f}) rotate(-90)" text-anchor="middle">'
               f"{escape(chart.y_label)}</text>")
    for y, label in chart.hlines:
        out.append(f'<line x1="{LEFT}" x2="{LEFT + pw}" y1="{py(y):.1f}" y2="{py(y):.1f}" stroke="#555" '
                   f'stroke-dasharray="4 3"><title>{escape(label)}</title></line>'
                   f'<text x="{LEFT + pw - 4}" y="{py(y) - 4:.1f}" text-anchor="end" fill="#555">{escape(label)}</text>')
    # series: a category chart spreads its series side by side within each slot
    n = len(chart.series)
    for i, s in enumerate(chart.series):
        color = PALETTE[i % len(PALETTE)]
        shift = (i - (n - 1) / 2) * min(0.15, 0.6 / max(n, 1)) if chart.categories and chart.dodge else 0.0
        pts = sorted((p for p in s.points if not chart.x_log or p.x > 0), key=lambda p: p.x)
        out.append(f'<g class="series" data-series="{i}">')
        if s.line and len(pts) > 1:
            path = " ".join(f"{px(tx(p.x) + shift):.1f},{py(p.y):.1f}" for p in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        for p in pts:
            x, y = px(tx(p.x) + shift), py(p.y)
            tip = f"{s.name}{f' · {p.label}' if p.label else ''}: " + (
                f"{chart.categories[int(p.x)]}, " if chart.categories else f"{chart.x_label} {_label(p.x)}, ")
            tip += f"{chart.y_label} {p.y:.4g}"
            if p.interval:
                lo, hi = p.interval
                tip += f" [{lo:.3g}, {hi:.3g}]"
                out.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(lo):.1f}" y2="{py(hi):.1f}" stroke="{color}"/>'
                           f'<line x1="{x - 4:.1f}" x2="{x + 4:.1f}" y1="{py(lo):.1f}" y2="{py(lo):.1f}" stroke="{color}"/>'
                           f'<line x1="{x - 4:.1f}" x2="{x + 4:.1f}" y1="{py(hi):.1f}" y2="{py(hi):.1f}" stroke="{color}"/>')
            out.append(f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{color}" stroke="#fff">'
                       f"<title>{escape(tip)}</title></circle>")
        out.append("</g>")
    # legend: one entry per series, a click toggles it in the HTML site
    for i, s in enumerate(chart.series):
        y = TOP + 8 + i * 16
        if y > height - 10:
            break
        color = PALETTE[i % len(PALETTE)]
        out.append(f'<g class="legend-item" data-series="{i}" tabindex="0" style="cursor:pointer">'
                   f'<rect x="{width - RIGHT + 10}" y="{y - 10}" width="{RIGHT - 14}" height="15" fill="#fff" '
                   'fill-opacity="0"/>'  # the whole entry takes the click, not just the swatch and the glyphs
                   f'<rect x="{width - RIGHT + 14}" y="{y - 8}" width="10" height="10" fill="{color}"/>'
                   f'<text x="{width - RIGHT + 30}" y="{y + 1}">{escape(_clip(s.name, 28))}</text>'
                   f"<title>{escape(s.name)} (click to hide or show)</title></g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"
