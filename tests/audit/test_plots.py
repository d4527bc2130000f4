"""The report's SVG bar charts: bars scaled to the axis, stacked in series order, labels escaped."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from efface.audit.plots import Bar, bar_chart


def _chart(bars: list[Bar], **options: object) -> ET.Element:
    svg = bar_chart(
        title="T <1>",
        bars=bars,
        colours={"a": "#111111", "b": "#222222"},
        x_label="x",
        y_label="y",
        empty="none",
        **options,
    )
    return ET.fromstring(svg)  # well-formed: every label escaped


def test_bars_are_scaled_to_the_axis_and_stacked_in_series_order() -> None:
    root = _chart([Bar("one", {"a": 3}), Bar("two & more", {"b": 2, "a": 6}), Bar("three", {"c": 1})], legend=True)
    rects = [r for r in root.iter("rect") if r.find("title") is not None]
    heights = {r.find("title").text: float(r.get("height")) for r in rects}
    assert set(heights) == {"one: a 3", "two & more: a 6", "two & more: b 2", "three: c 1"}
    assert abs(heights["two & more: a 6"] - 2 * heights["one: a 3"]) < 0.2
    two = sorted((r for r in rects if r.find("title").text.startswith("two")), key=lambda r: -float(r.get("y")))
    assert [r.find("title").text for r in two] == ["two & more: a 6", "two & more: b 2"]  # a at the bottom
    assert next(r for r in rects if r.find("title").text == "three: c 1").get("fill") == "#7e57c2"  # no colour named
    ticks = [t.text for t in root.iter("text") if t.text and re.fullmatch(r"[\d,]+", t.text)]
    assert ticks[0] == "0" and int(ticks[-1].replace(",", "")) >= 8
    legend = [t.text for t in root.iter("text")]
    assert {"a", "b", "c"} <= set(legend) and "T <1>" in legend


def test_an_empty_chart_says_so() -> None:
    root = _chart([])
    assert "none" in [t.text for t in root.iter("text")] and not [r for r in root.iter("rect")]
