"""A small bar plot of messages handled per minute, drawn as SVG on the server.

One bar a minute, scaled to the busiest minute shown; each bar says its minute and
count on hover, and the picture as a whole says its total and peak to a screen reader.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from django.utils import formats, timezone
from django.utils.safestring import SafeString

from console.overview import MinuteCount
from console.svg import number, svg_html, svg_root

BAR_WIDTH = 6
BAR_GAP = 2
PLOT_HEIGHT = 60
#: Room under the bars for the time axis labels.
AXIS_HEIGHT = 16

STYLE = """
svg.bus-activity { font-family: var(--font-family-primary, sans-serif); font-size: 10px; }
svg.bus-activity .bar { fill: var(--secondary, #417690); }
svg.bus-activity .axis { stroke: var(--border-color, #ccc); }
svg.bus-activity text { fill: var(--body-quiet-color, #666); }
"""


def activity_svg(counts: list[MinuteCount]) -> SafeString:
    """Bars for ``counts`` (oldest first), labelled with the first and last minute."""
    peak = max((c.count for c in counts), default=0)
    total = sum(c.count for c in counts)
    width = len(counts) * (BAR_WIDTH + BAR_GAP)
    height = PLOT_HEIGHT + AXIS_HEIGHT
    svg = svg_root(
        css_class="bus-activity",
        width=width,
        height=height,
        title=f"Messages handled per minute over the last {len(counts)} minutes: {total} in all, "
              f"at most {peak} a minute",
        style=STYLE,
    )
    for n, minute in enumerate(counts):
        bar_height = PLOT_HEIGHT * minute.count / peak if peak else 0
        bar = ET.SubElement(svg, "rect", {
            "class": "bar",
            "x": number(n * (BAR_WIDTH + BAR_GAP)),
            "y": number(PLOT_HEIGHT - bar_height),
            "width": number(BAR_WIDTH),
            "height": number(bar_height),
            "data-count": str(minute.count),
        })
        ET.SubElement(bar, "title").text = f"{_time(minute)}: {minute.count} handled"
    ET.SubElement(svg, "line", {"class": "axis", "x1": "0", "y1": number(PLOT_HEIGHT + 0.5),
                                "x2": number(width), "y2": number(PLOT_HEIGHT + 0.5)})
    if counts:
        ET.SubElement(svg, "text", {"x": "0", "y": number(height - 2)}).text = _time(counts[0])
        ET.SubElement(svg, "text", {"x": number(width), "y": number(height - 2), "text-anchor": "end"}).text = _time(counts[-1])
    return svg_html(svg)


def _time(minute: MinuteCount) -> str:
    return formats.time_format(timezone.localtime(minute.minute), "H:i")
