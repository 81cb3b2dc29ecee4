"""Inline SVG charts drawn by hand: no JavaScript, no library, no external resource.

Each function returns one ``<svg>`` element as a string, ready to sit inside an HTML page.
Every piece of text is escaped; every number is written with a fixed precision.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

WIDTH, PLOT_HEIGHT = 720, 210
LEFT, RIGHT, TOP = 64, 16, 52
PALETTE = ("#1f4e79", "#c55a11", "#548235", "#7f6000", "#7030a0")


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float]
    dashed: bool = False


def line_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    y_label: str,
    x_label: str,
) -> str:
    """One line per series over categorical x positions (deciles), with points and a legend."""
    frame = _Frame(categories, [v for s in series for v in s.values])
    parts = frame.axes(title, y_label, x_label)
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        points = " ".join(
            f"{frame.x_center(j):.1f},{frame.y(v):.1f}" for j, v in enumerate(s.values)
        )
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        parts.append(
            f'<polyline class="series" points="{points}" fill="none" stroke="{colour}" '
            f'stroke-width="2"{dash}><title>{escape(s.name)}</title></polyline>'
        )
        parts.extend(
            f'<circle cx="{frame.x_center(j):.1f}" cy="{frame.y(v):.1f}" r="3" fill="{colour}">'
            f"<title>{escape(s.name)}, {escape(categories[j])}: {_tick(v)}</title></circle>"
            for j, v in enumerate(s.values)
        )
    parts.append(_legend([s.name for s in series]))
    return _svg(title, parts, frame.height)


def bar_chart(
    title: str,
    categories: Sequence[str],
    series: Sequence[Series],
    *,
    y_label: str,
    x_label: str,
    highlight: Sequence[bool] | None = None,
) -> str:
    """Grouped bars, one group per category; ``highlight`` marks categories in a warning colour
    (single-series charts only)."""
    frame = _Frame(categories, [v for s in series for v in s.values])
    parts = frame.axes(title, y_label, x_label)
    group = frame.step * 0.8
    width = group / max(len(series), 1)
    for i, s in enumerate(series):
        colour = PALETTE[i % len(PALETTE)]
        for j, v in enumerate(s.values):
            fill = "#c00000" if highlight is not None and highlight[j] else colour
            x = frame.x_center(j) - group / 2 + i * width
            top = frame.y(max(v, 0.0))
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{top:.1f}" width="{max(width - 1, 1):.1f}" '
                f'height="{frame.y(0.0) - top:.1f}" fill="{fill}">'
                f"<title>{escape(s.name)}, {escape(categories[j])}: {_tick(v)}</title></rect>"
            )
    if len(series) > 1:
        parts.append(_legend([s.name for s in series]))
    return _svg(title, parts, frame.height)


class _Frame:
    """The plotting area: x positions per category, a y scale from 0 (or the minimum) up."""

    def __init__(self, categories: Sequence[str], values: Sequence[float]) -> None:
        self.categories = list(categories)
        finite = [v for v in values if math.isfinite(v)] or [0.0]
        low = min(0.0, min(finite))
        self.ticks = _nice_ticks(low, max(max(finite), low + 1e-12))
        self.low, self.high = self.ticks[0], self.ticks[-1]
        self.plot_width = WIDTH - LEFT - RIGHT
        self.plot_height = PLOT_HEIGHT
        longest = max(map(len, self.categories), default=0)
        self.rotate = len(self.categories) > 12 or longest > 6
        # Room under the plot for the category labels (slanted ones need more), then x_label.
        self.height = TOP + PLOT_HEIGHT + (24 + int(4.5 * longest) if self.rotate else 24) + 20
        self.step = self.plot_width / max(len(self.categories), 1)

    def x_center(self, index: int) -> float:
        return LEFT + (index + 0.5) * self.step

    def y(self, value: float) -> float:
        span = self.high - self.low or 1.0
        clipped = min(max(value, self.low), self.high)
        return TOP + self.plot_height * (1 - (clipped - self.low) / span)

    def axes(self, title: str, y_label: str, x_label: str) -> list[str]:
        parts = [
            f'<text x="{LEFT + self.plot_width / 2:.1f}" y="{self.height - 6}" '
            f'class="axis-label" text-anchor="middle">{escape(x_label)}</text>',
            f'<text x="{LEFT}" y="20" class="chart-title">{escape(title)}</text>',
            f'<text x="14" y="{TOP + self.plot_height / 2:.1f}" class="axis-label" '
            f'transform="rotate(-90 14 {TOP + self.plot_height / 2:.1f})">{escape(y_label)}</text>',
        ]
        for tick in self.ticks:
            y = self.y(tick)
            parts.append(
                f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" class="grid"/>'
                f'<text x="{LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
                f"{_tick(tick)}</text>"
            )
        rotate = self.rotate
        for j, category in enumerate(self.categories):
            x, y = self.x_center(j), TOP + self.plot_height + 14
            turn = f' transform="rotate(-40 {x:.1f} {y:.1f})"' if rotate else ""
            anchor = "end" if rotate else "middle"
            parts.append(
                f'<text x="{x:.1f}" y="{y:.1f}" class="tick" text-anchor="{anchor}"{turn}>'
                f"{escape(category)}</text>"
            )
        bottom = TOP + self.plot_height
        parts.append(
            f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" class="axis"/>'
        )
        return parts


def _legend(names: Sequence[str]) -> str:
    items = []
    for i, name in enumerate(names):
        colour, x = PALETTE[i % len(PALETTE)], LEFT + 170 * i
        items.append(
            f'<rect x="{x}" y="28" width="12" height="12" fill="{colour}"/>'
            f'<text x="{x + 16}" y="38" class="legend">{escape(name)}</text>'
        )
    return "".join(items)


def _svg(title: str, parts: list[str], height: int) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
        f'role="img" aria-label="{escape(title)}"><title>{escape(title)}</title>'
        + "".join(parts)
        + "</svg>"
    )


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2, 2.5 or 5 × a power of ten."""
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step) * step
    ticks = [start]
    while ticks[-1] < high - 1e-12 * step:
        ticks.append(start + len(ticks) * step)
    return ticks


def _tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"
