"""The topology as a picture: which context owns each command and event, and which
contexts receive it, drawn as SVG on the server.

The facts are ``Topology.describe()``'s, the same ``manage.py bus_topology`` prints;
this module only arranges them. The layout is a pure function of those facts (sorted
names, fixed sizes), so the same code always draws the same picture, and an event
that nobody subscribes to (a command nobody handles) is drawn dashed and labelled,
not left out.
"""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

from django.utils.safestring import SafeString

from console.svg import number, svg_html, svg_root
from messaging.topology import COMMANDS_EXCHANGE, consumer_queue_name, event_exchange_name


@dataclasses.dataclass(frozen=True)
class Delivery:
    """One context receiving a message: on which queue, by which handlers."""

    context: str
    queue: str
    handlers: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class MessageFlow:
    """A contract and where it goes: from its owner, through an exchange, to its consumers."""

    type: str
    kind: str
    version: int
    owner: str
    exchange: str
    deliveries: tuple[Delivery, ...]

    @property
    def unreceived(self) -> bool:
        """Nobody receives it: an event nobody subscribes to (its exchange drops it), or
        a command without a handler (it waits in its queue; check messaging.W001)."""
        return not self.deliveries

    @property
    def unreceived_label(self) -> str:
        return "no subscribers" if self.kind == "event" else "no handler"


def message_flows(description: dict) -> list[MessageFlow]:
    """Every contract of ``Topology().describe()`` with its deliveries, by owner, commands
    first, then by type."""
    flows = []
    for contract in description["contracts"]:
        message_type, kind = contract["type"], contract["kind"]
        deliveries = []
        for context, about in sorted(description["contexts"].items()):
            handlers = tuple(h["handler"] for h in about["handlers"] if h["message_type"] == message_type)
            if handlers:
                deliveries.append(Delivery(context, consumer_queue_name(context, kind, message_type), handlers))
        flows.append(MessageFlow(
            type=message_type,
            kind=kind,
            version=contract["version"],
            owner=contract["owner"] or "",
            exchange=COMMANDS_EXCHANGE if kind == "command" else event_exchange_name(message_type),
            deliveries=tuple(deliveries),
        ))
    return sorted(flows, key=lambda f: (f.owner, f.kind != "command", f.type))


# Geometry, in SVG user units (pixels at scale 1). Text is not measured: widths come
# from the longest name at a generous width per character.
CHAR_WIDTH = 7.2
ROW_HEIGHT = 26
ROW_GAP = 6
GROUP_GAP = 18
COLUMN_GAP = 150
MARGIN = 12
HEADER_HEIGHT = 58
CONTEXT_MIN_HEIGHT = 34

#: Colours from the admin's own CSS variables (light and dark themes), with fallbacks.
STYLE = """
svg.bus-topology { font-family: var(--font-family-primary, sans-serif); font-size: 12px; }
svg.bus-topology .heading { fill: var(--body-quiet-color, #666); font-weight: bold; }
svg.bus-topology .legend { fill: var(--body-quiet-color, #666); }
svg.bus-topology .context rect { fill: var(--secondary, #417690); }
svg.bus-topology .context text { fill: var(--header-link-color, #fff); font-weight: bold; }
svg.bus-topology .message rect { fill: var(--body-bg, #fff); stroke: var(--primary, #79aec8); stroke-width: 1.5; }
svg.bus-topology .message text { fill: var(--body-fg, #333); }
svg.bus-topology .message .kind { fill: var(--body-quiet-color, #666); font-size: 10px; }
svg.bus-topology .event rect { stroke: var(--secondary, #417690); }
svg.bus-topology .unreceived rect { stroke: var(--error-fg, #ba2121); stroke-dasharray: 5 3; }
svg.bus-topology .unreceived .marker { fill: var(--error-fg, #ba2121); font-style: italic; }
svg.bus-topology .owns { stroke: var(--border-color, #ccc); stroke-width: 1.5; }
svg.bus-topology .route { fill: none; stroke: var(--body-quiet-color, #666); stroke-width: 1.2; }
svg.bus-topology #bus-arrow path { fill: var(--body-quiet-color, #666); }
"""


def _text_width(text: str) -> float:
    return len(text) * CHAR_WIDTH


def diagram_svg(flows: list[MessageFlow]) -> SafeString:
    """The diagram: owners on the left, their messages in the middle, receiving
    contexts on the right, an arrow for each delivery."""
    owners = sorted({f.owner for f in flows})
    receivers = sorted({d.context for f in flows for d in f.deliveries})
    owner_width = max([_text_width(name) for name in owners + receivers] + [90]) + 24
    message_width = max([_text_width(f.type) for f in flows] + [0]) + _text_width("no subscribers") + 64
    owner_x = MARGIN
    message_x = owner_x + owner_width + 28
    receiver_x = message_x + message_width + COLUMN_GAP

    # Middle column: messages grouped by owner; each owner's box spans its group.
    message_y: dict[str, float] = {}
    owner_span: dict[str, tuple[float, float]] = {}
    y = HEADER_HEIGHT
    for owner in owners:
        top = y
        for flow in (f for f in flows if f.owner == owner):
            message_y[flow.type] = y
            y += ROW_HEIGHT + ROW_GAP
        owner_span[owner] = (top, y - ROW_GAP)
        y += GROUP_GAP
    middle_bottom = y - GROUP_GAP

    # Right column: each receiving context near the middle of the arrows it receives,
    # in that order, pushed down where it would overlap the one above.
    incoming = {
        context: sorted(
            (f for f in flows for d in f.deliveries if d.context == context), key=lambda f: message_y[f.type]
        )
        for context in receivers
    }
    wanted = {
        context: sum(message_y[f.type] for f in sources) / len(sources) + ROW_HEIGHT / 2
        for context, sources in incoming.items()
    }
    receiver_box: dict[str, tuple[float, float]] = {}
    below = HEADER_HEIGHT
    for context in sorted(receivers, key=lambda c: (wanted[c], c)):
        height = max(CONTEXT_MIN_HEIGHT, 12 * len(incoming[context]) + 12)
        top = max(below, wanted[context] - height / 2)
        receiver_box[context] = (top, height)
        below = top + height + GROUP_GAP

    width = receiver_x + owner_width + MARGIN
    height = max(middle_bottom, below - GROUP_GAP) + MARGIN
    svg = svg_root(
        css_class="bus-topology",
        width=width,
        height=height,
        title="Message topology: each context's commands and events, and the contexts that receive them",
        style=STYLE,
    )
    marker = ET.SubElement(ET.SubElement(svg, "defs"), "marker", {
        "id": "bus-arrow", "viewBox": "0 0 10 10", "refX": "10", "refY": "5",
        "markerWidth": "7", "markerHeight": "7", "orient": "auto-start-reverse",
    })
    ET.SubElement(marker, "path", d="M 0 0 L 10 5 L 0 10 z")

    for x, label in ((owner_x, "Owner"), (message_x, "Commands and events"), (receiver_x, "Received by")):
        _text(svg, x, 20, label, cls="heading")
    _text(svg, message_x, 40, "A command goes to its owner's queue, an event to a queue of each subscriber.", cls="legend")

    for owner in owners:
        top, bottom = owner_span[owner]
        group = ET.SubElement(svg, "g", {"class": "context owner"})
        _rect(group, owner_x, top, owner_width, bottom - top, rx=4)
        _text(group, owner_x + 12, (top + bottom) / 2 + 4, owner or "(no owner)")

    for flow in flows:
        top = message_y[flow.type]
        middle = top + ROW_HEIGHT / 2
        ET.SubElement(svg, "line", {
            "class": "owns", "x1": number(owner_x + owner_width), "y1": number(middle), "x2": number(message_x), "y2": number(middle),
        })
        classes = f"message {flow.kind}" + (" unreceived" if flow.unreceived else "")
        group = ET.SubElement(svg, "g", {"class": classes, "data-type": flow.type})
        ET.SubElement(group, "title").text = _describe(flow)
        _rect(group, message_x, top, message_width, ROW_HEIGHT, rx=ROW_HEIGHT / 2 if flow.kind == "event" else 2)
        _text(group, message_x + 12, middle + 4, flow.kind, cls="kind")
        _text(group, message_x + 70, middle + 4, flow.type)
        if flow.unreceived:
            _text(group, message_x + message_width - 12, middle + 4, flow.unreceived_label, cls="marker", anchor="end")

    for context in receivers:
        top, box_height = receiver_box[context]
        group = ET.SubElement(svg, "g", {"class": "context receiver"})
        _rect(group, receiver_x, top, owner_width, box_height, rx=4)
        _text(group, receiver_x + 12, top + box_height / 2 + 4, context)
        # Arrow heads spread along the box's edge, in the order of their sources: no crossing there.
        sources = incoming[context]
        for n, flow in enumerate(sources):
            start_x, start_y = message_x + message_width, message_y[flow.type] + ROW_HEIGHT / 2
            end_y = top + box_height * (n + 1) / (len(sources) + 1)
            bend = COLUMN_GAP / 2
            ET.SubElement(svg, "path", {
                "class": "route",
                "d": f"M {number(start_x)} {number(start_y)} C {number(start_x + bend)} {number(start_y)}, "
                     f"{number(receiver_x - bend)} {number(end_y)}, {number(receiver_x)} {number(end_y)}",
                "marker-end": "url(#bus-arrow)",
            })
    return svg_html(svg)


def _describe(flow: MessageFlow) -> str:
    receivers = ", ".join(f"{d.context} (queue {d.queue})" for d in flow.deliveries) or "nobody"
    return f"{flow.type} v{flow.version}, {flow.kind} of {flow.owner}, exchange {flow.exchange}: to {receivers}"


def _rect(parent: ET.Element, x: float, y: float, width: float, height: float, *, rx: float) -> None:
    ET.SubElement(parent, "rect", {
        "x": number(x), "y": number(y), "width": number(width), "height": number(height), "rx": number(rx),
    })


def _text(parent: ET.Element, x: float, y: float, text: str, *, cls: str = "", anchor: str = "start") -> None:
    attributes = {"x": number(x), "y": number(y)}
    if cls:
        attributes["class"] = cls
    if anchor != "start":
        attributes["text-anchor"] = anchor
    ET.SubElement(parent, "text", attributes).text = text
