"""The small part of SVG the admin's pictures share: a root element and stable numbers.

Elements are built with ElementTree, so every name and label is escaped, and the
result is inline markup: no script, no file, nothing fetched.
"""

import xml.etree.ElementTree as ET

from django.utils.safestring import SafeString, mark_safe


def number(value: float) -> str:
    """A coordinate as short, stable text: one decimal at most."""
    return f"{value:.1f}".removesuffix(".0")


def svg_root(*, css_class: str, width: float, height: float, title: str, style: str) -> ET.Element:
    """An ``<svg>`` of this size, described by ``title`` for screen readers and on hover,
    styled by ``style`` (rules scoped to ``svg.<css_class>``)."""
    root = ET.Element("svg", {
        "xmlns": "http://www.w3.org/2000/svg",
        "class": css_class,
        "role": "img",
        "width": number(width),
        "height": number(height),
        "viewBox": f"0 0 {number(width)} {number(height)}",
    })
    ET.SubElement(root, "title").text = title
    ET.SubElement(root, "style").text = style
    return root


def svg_html(root: ET.Element) -> SafeString:
    return mark_safe(ET.tostring(root, encoding="unicode"))
