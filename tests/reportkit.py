"""Readers of a rendered HTML report, shared by the report tests (imported as `reportkit`): the plots' axis
titles (from each image's alt text) and the side-by-side examples table."""

from __future__ import annotations

import html
import re


def plot_panels(page: str) -> list[tuple[str, str, str]]:
    """(title, x-axis title, y-axis title) of every panel of every plot in a report, read from the images' alt
    text; fails on an image without it."""
    imgs = re.findall(r"<img\b[^>]*>", page)
    panels = []
    for img in imgs:
        alt = re.search(r'alt="([^"]*)"', img)
        assert alt, img[:80]
        for part in html.unescape(alt.group(1)).split(" | "):
            m = re.fullmatch(r"(.*) \(x: (.*); y: (.*)\)", part)
            assert m, part
            panels.append((m.group(1), m.group(2), m.group(3)))
    assert len(panels) >= len(imgs)
    return panels


def assert_every_axis_titled(page: str) -> int:
    """Every panel of every plot has a title, an x-axis title and a y-axis title; returns the number of plots."""
    for title, x, y in plot_panels(page):
        assert title.strip() and x.strip() and y.strip(), (title, x, y)
    return page.count("data:image/png;base64,")


def example_columns(page: str) -> tuple[list[str], list[list[str]]]:
    """The header and the rows (cells as HTML) of the side-by-side table."""
    table = re.search(r"<table class='examples'>(.*?)</table>", page, re.S)
    assert table, "no side-by-side examples table"
    rows = re.findall(r"<tr>(.*?)</tr>", table.group(1), re.S)
    head = [html.unescape(h) for h in re.findall(r"<th>(.*?)</th>", rows[0])]
    return head, [re.findall(r"<td>(.*?)</td>", r, re.S) for r in rows[1:]]
