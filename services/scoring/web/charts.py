"""Charts as server-rendered SVG: no script, no library, readable on a phone and in print.

Pure functions of the figures: each returns the SVG text (every label escaped). A value that cannot be computed
draws no bar or point and is written as absent (``—``), never as 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

from services.scoring.web.fmt import ABSENT, pct

#: Fewer than this share of the axis is not worth a label inside the bar.
_AXIS_FROM = 0.0


def _x(ratio: float, *, left: float, width: float, lo: float) -> float:
    ratio = min(1.0, max(lo, ratio))
    return left + (ratio - lo) / (1.0 - lo) * width


def target_bars(rows: Sequence[tuple[str, float | None]], *, target: float, title: str, lo: float = _AXIS_FROM,
                width: int = 640) -> str:
    """Horizontal bars, one per (label, ratio 0..1), with the target as a vertical line.

    A bar under the target is drawn in the ``below`` class, at or above it ``ok``; a row without a value has no
    bar and says :data:`~services.scoring.web.fmt.ABSENT`.
    """
    label_w, value_w, row_h, top = 270.0, 70.0, 22.0, 26.0
    plot_w = width - label_w - value_w - 10
    height = top + row_h * len(rows) + 8
    tx = _x(target, left=label_w, width=plot_w, lo=lo)
    out = [
        (f'<svg class="chart bars" viewBox="0 0 {width} {height:.0f}" '
         f'role="img" aria-label="{escape(title)}">'),
        f"<title>{escape(title)}</title>",
    ]
    for i, (label, ratio) in enumerate(rows):
        y = top + i * row_h
        out.append(f'<text class="label" x="{label_w - 6:.0f}" y="{y + 15:.0f}" text-anchor="end">'
                   f"{escape(label)}</text>")
        out.append(f'<rect class="track" x="{label_w:.0f}" y="{y + 3:.0f}" width="{plot_w:.0f}" height="{row_h - 6:.0f}"/>')
        if ratio is None:
            out.append(f'<text class="value absent" x="{label_w + plot_w + 6:.0f}" y="{y + 15:.0f}">{ABSENT}</text>')
            continue
        cls = "ok" if ratio >= target else "below"
        bar = _x(ratio, left=label_w, width=plot_w, lo=lo) - label_w
        out.append(f'<rect class="bar {cls}" x="{label_w:.0f}" y="{y + 3:.0f}" width="{bar:.1f}" '
                   f'height="{row_h - 6:.0f}"><title>{escape(label)}: {escape(pct(ratio))}</title></rect>')
        out.append(f'<text class="value {cls}" x="{label_w + plot_w + 6:.0f}" y="{y + 15:.0f}">'
                   f"{escape(pct(ratio))}</text>")
    out.append(f'<line class="target" x1="{tx:.1f}" y1="{top - 6:.0f}" x2="{tx:.1f}" y2="{height - 4:.0f}"/>')
    out.append(f'<text class="target-label" x="{tx:.1f}" y="{top - 10:.0f}" text-anchor="middle">'
               f"Mục tiêu {escape(pct(target, digits=0))}</text>")
    out.append("</svg>")
    return "".join(out)


def trend(points: Sequence[tuple[str, float | None]], *, target: float, title: str, lo: float = 0.5,
          width: int = 640, height: int = 220) -> str:
    """A line over (label, ratio) points in order, the target as a horizontal line; a missing value breaks the
    line (no point is drawn for it). The axis starts at ``lo``, or lower (a tenth) to hold the lowest value."""
    values = [r for _, r in points if r is not None]
    if values:
        lo = min(lo, math.floor(max(0.0, min(values)) * 10) / 10)
    # the right margin holds half of the last month's label ('T12/26', centred on its point)
    left, right, top, bottom = 44.0, 26.0, 16.0, 28.0
    plot_w, plot_h = width - left - right, height - top - bottom
    n = max(1, len(points) - 1)

    def y_of(ratio: float) -> float:
        r = min(1.0, max(lo, ratio))
        return top + (1.0 - (r - lo) / (1.0 - lo)) * plot_h

    out = [
        (f'<svg class="chart trend" viewBox="0 0 {width} {height}" '
         f'role="img" aria-label="{escape(title)}">'),
        f"<title>{escape(title)}</title>",
    ]
    for tick in (lo, (lo + 1.0) / 2, 1.0):
        y = y_of(tick)
        out.append(f'<line class="grid" x1="{left:.0f}" y1="{y:.1f}" x2="{width - right:.0f}" y2="{y:.1f}"/>')
        out.append(f'<text class="axis" x="{left - 4:.0f}" y="{y + 4:.1f}" text-anchor="end">'
                   f"{escape(pct(tick, digits=0))}</text>")
    ty = y_of(target)
    out.append(f'<line class="target" x1="{left:.0f}" y1="{ty:.1f}" x2="{width - right:.0f}" y2="{ty:.1f}"/>')
    segments: list[list[tuple[float, float]]] = [[]]
    for i, (label, ratio) in enumerate(points):
        x = left + plot_w * i / n
        out.append(f'<text class="axis" x="{x:.1f}" y="{height - 8:.0f}" text-anchor="middle">{escape(label)}</text>')
        if ratio is None:
            segments.append([])
            continue
        y = y_of(ratio)
        segments[-1].append((x, y))
        cls = "ok" if ratio >= target else "below"
        out.append(f'<circle class="point {cls}" cx="{x:.1f}" cy="{y:.1f}" r="3.5">'
                   f"<title>{escape(label)}: {escape(pct(ratio))}</title></circle>")
    for seg in segments:
        if len(seg) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in seg)
            out.insert(3, f'<polyline class="line" points="{path}"/>')
    out.append("</svg>")
    return "".join(out)
