"""The DPO report's plots as inline SVG: bar charts drawn here, so that the report needs nothing beyond the base
install (no plotting library) and stays one self-contained page. Pure: numbers in, markup out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Bar", "bar_chart"]

_WIDTH, _HEIGHT = 880, 300
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 170, 34, 78
_MAX_LABELS = 12


@dataclass(frozen=True, slots=True)
class Bar:
    """One bar: its label under the axis and its value per series (stacked in the order of the chart's series)."""

    label: str
    values: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.values.values())


def _ticks(top: int) -> list[int]:
    """Round values from 0 to at least ``top`` for the y axis: a step of 1, 2 or 5 times a power of ten, at most
    about five of them."""
    if top <= 0:
        return [0, 1]
    raw = max(1.0, top / 4)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    return list(range(0, math.ceil(top / step) * step + 1, step))


def _text(x: float, y: float, text: str, *, anchor: str = "middle", size: int = 12, extra: str = "") -> str:
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{size}" {extra}>{escape(text)}</text>'


def bar_chart(
    *,
    title: str,
    bars: Sequence[Bar],
    colours: Mapping[str, str],
    x_label: str,
    y_label: str,
    empty: str,
    legend: bool = False,
    other_colour: str = "#7e57c2",
) -> str:
    """A bar chart (stacked where bars have several series) as an ``<svg>`` element.

    Args:
        title: above the plot.
        bars: in order, left to right.
        colours: per series name, its colour; the series are stacked in this order, any other after them.
        x_label / y_label: the axes' names.
        empty: what the plot says when there is no bar.
        legend: name the series that occur, at the right.
        other_colour: the colour of a series ``colours`` does not name.
    """
    parts = [
        f'<svg role="img" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" font-family="system-ui, sans-serif" aria-label="{escape(title)}">',
        f"<title>{escape(title)}</title>",
        _text(_LEFT, 20, title, anchor="start", size=14, extra='font-weight="600"'),
    ]
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    base_y = _TOP + plot_h
    parts.append(f'<line x1="{_LEFT}" y1="{base_y}" x2="{_LEFT + plot_w}" y2="{base_y}" stroke="#555"/>')
    parts.append(_text(_LEFT + plot_w / 2, _HEIGHT - 8, x_label))
    parts.append(_text(16, _TOP + plot_h / 2, y_label, extra=f'transform="rotate(-90 16 {_TOP + plot_h / 2:.1f})"'))
    if not bars or not any(bar.total for bar in bars):
        parts.append(_text(_LEFT + plot_w / 2, _TOP + plot_h / 2, empty, extra='fill="#666"'))
        parts.append("</svg>")
        return "".join(parts)
    ticks = _ticks(max(bar.total for bar in bars))
    top = ticks[-1]
    for tick in ticks:
        y = base_y - plot_h * tick / top
        parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_LEFT + plot_w}" y2="{y:.1f}" stroke="#e0e0e0"/>')
        parts.append(_text(_LEFT - 6, y + 4, f"{tick:,}", anchor="end", size=11))
    order = list(dict.fromkeys([*colours, *(name for bar in bars for name in bar.values)]))
    slot = plot_w / len(bars)
    width = min(56.0, max(1.0, slot * 0.8))
    step = max(1, math.ceil(len(bars) / _MAX_LABELS))
    for index, bar in enumerate(bars):
        x = _LEFT + index * slot + (slot - width) / 2
        y = base_y
        for name in order:
            value = bar.values.get(name, 0)
            if not value:
                continue
            height = plot_h * value / top
            y -= height
            colour = colours.get(name, other_colour)
            parts.append(
                f'<rect x="{x:.1f}" y="{y:.1f}" width="{width:.1f}" height="{height:.1f}" fill="{colour}">'
                f"<title>{escape(bar.label)}: {escape(name)} {value:,}</title></rect>"
            )
        if index % step == 0:
            cx, ly = x + width / 2, base_y + 14
            rotate = f'transform="rotate(-30 {cx:.1f} {ly:.1f})"' if len(bars) > 8 else ""
            parts.append(_text(cx, ly, bar.label, anchor="end" if rotate else "middle", size=11, extra=rotate))
    if legend:
        shown = [name for name in order if any(bar.values.get(name) for bar in bars)]
        for row, name in enumerate(shown):
            y = _TOP + row * 18
            parts.append(
                f'<rect x="{_WIDTH - _RIGHT + 16}" y="{y}" width="12" height="12" '
                f'fill="{colours.get(name, other_colour)}"/>'
            )
            parts.append(_text(_WIDTH - _RIGHT + 34, y + 10, name, anchor="start", size=11))
    parts.append("</svg>")
    return "".join(parts)
