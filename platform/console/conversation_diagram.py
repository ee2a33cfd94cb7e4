"""A conversation as a sequence diagram, drawn on the server as SVG.

One lane per participant (the operator first, then each context as it first
appears); one arrow per delivery, from the sender's lane to the receiving
context's, in the timeline's order. An arrow's colour is its delivery's state:
red for a dead letter, orange for a retry (with the number of attempts), grey
and dashed for what has not happened yet. Every arrow links to its row of the
timeline. ElementTree writes the markup, so every name and type is escaped.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from django.utils.safestring import SafeString, mark_safe

from messaging.contexts import OPERATOR_SOURCE
from console.conversation import Conversation, Delivery, DeliveryState, Step

LANE_WIDTH = 190
ROW_HEIGHT = 30
HEADER_HEIGHT = 44
MARGIN = 16
#: A message a context sends to itself loops this far out of its lane.
LOOP_WIDTH = 36
#: The Django admin's own palette, so the diagram sits in its pages.
COLOURS = {
    DeliveryState.HANDLED: "#417690",
    DeliveryState.PENDING: "#8a8a8a",
    DeliveryState.RETRYING: "#c46d00",
    DeliveryState.DEAD_LETTERED: "#ba2121",
    DeliveryState.DISCARDED: "#6b6b6b",
}
#: The lane of a message whose sender no record names (its outbox row was purged).
UNKNOWN_SENDER = "?"


def sequence_diagram(conversation: Conversation) -> SafeString:
    """The SVG markup of ``conversation``'s sequence diagram."""
    lanes = [participant or UNKNOWN_SENDER for participant in conversation.participants]
    rows = [row for step in conversation.steps for row in _rows(step)]
    width = 2 * MARGIN + LANE_WIDTH * max(len(lanes), 1)
    height = HEADER_HEIGHT + ROW_HEIGHT * (len(rows) + 1)
    svg = ET.Element("svg", {
        "xmlns": "http://www.w3.org/2000/svg", "width": str(width), "height": str(height),
        "viewBox": f"0 0 {width} {height}", "role": "img", "class": "conversation-diagram",
        "font-family": "sans-serif", "font-size": "11",
    })
    ET.SubElement(svg, "title").text = f"Sequence diagram of conversation {conversation.correlation_id}"
    _arrowheads(ET.SubElement(svg, "defs"))
    x_of = {lane: MARGIN + LANE_WIDTH * index + LANE_WIDTH // 2 for index, lane in enumerate(lanes)}
    for lane, x in x_of.items():
        _lane(svg, lane, x, height)
    for index, (step, delivery, label, sender) in enumerate(rows):
        y = HEADER_HEIGHT + ROW_HEIGHT * (index + 1)
        _arrow(svg, step, delivery, label, x_of[sender or UNKNOWN_SENDER], x_of.get(delivery.context if delivery else ""), y)
    return mark_safe(ET.tostring(svg, encoding="unicode"))  # ElementTree escaped every text and attribute


def _rows(step: Step) -> list[tuple[Step, Delivery | None, str, str]]:
    """(step, delivery, label, sender) for each arrow of ``step``: one per receiving context, one
    per time a person sent it again, and a stub for an event nobody subscribes to."""
    name = f"#{step.number} {step.message_type}"
    if not step.deliveries:
        return [(step, None, f"{name} (no subscribers)", step.source)]
    rows = []
    for delivery in step.deliveries:
        rows.append((step, delivery, f"{name}{_annotation(delivery)}", step.source))
        rows += [(step, delivery, f"#{step.number} sent again to {delivery.context} by the operator", OPERATOR_SOURCE)
                 for _ in delivery.redeliveries]
    return rows


def _annotation(delivery: Delivery) -> str:
    if delivery.state == DeliveryState.HANDLED:
        return f" \u21bb {delivery.automatic_retries} retries" if delivery.automatic_retries else ""
    if delivery.state == DeliveryState.DEAD_LETTERED and delivery.automatic_retries:
        return f" \u2715 dead-lettered after {delivery.automatic_retries + 1} attempts"
    return f" \u2014 {delivery.state}"


def _arrowheads(defs: ET.Element) -> None:
    for state, colour in COLOURS.items():
        marker = ET.SubElement(defs, "marker", {
            "id": _marker_id(state), "viewBox": "0 0 10 10", "refX": "9", "refY": "5",
            "markerWidth": "7", "markerHeight": "7", "orient": "auto-start-reverse",
        })
        ET.SubElement(marker, "path", {"d": "M 0 0 L 10 5 L 0 10 z", "fill": colour})


def _lane(svg: ET.Element, name: str, x: int, height: int) -> None:
    box_width = LANE_WIDTH - 20
    ET.SubElement(svg, "rect", {
        "x": str(x - box_width // 2), "y": "8", "width": str(box_width), "height": "26", "rx": "4",
        "fill": "#79aec8" if name != OPERATOR_SOURCE else "#f5dd5d",
    })
    label = ET.SubElement(svg, "text", {"x": str(x), "y": "25", "text-anchor": "middle", "font-weight": "bold",
                                        "font-size": "12", "fill": "#333"})
    label.text = name
    ET.SubElement(svg, "line", {"x1": str(x), "y1": "34", "x2": str(x), "y2": str(height - 4),
                                "stroke": "#ccc", "stroke-dasharray": "3 3"})


def _arrow(svg: ET.Element, step: Step, delivery: Delivery | None, label: str, x1: int, x2: int | None,
           y: int) -> None:
    if delivery is not None:
        state = delivery.state
    else:
        state = DeliveryState.PENDING if step.pending else DeliveryState.HANDLED
    colour = COLOURS[state]
    link = ET.SubElement(svg, "a", {"href": f"#message-{step.message_id}"})
    ET.SubElement(link, "title").text = label
    stroke = {"stroke": colour, "stroke-width": "1.5", "fill": "none"}
    if state in (DeliveryState.PENDING, DeliveryState.RETRYING):
        stroke["stroke-dasharray"] = "5 4"
    if delivery is not None and x2 is not None and x2 != x1:
        ET.SubElement(link, "line", {"x1": str(x1), "y1": str(y), "x2": str(x2), "y2": str(y), **stroke,
                                     "marker-end": f"url(#{_marker_id(state)})"})
        text_x, anchor = (x1 + x2) // 2, "middle"
    elif delivery is not None:  # to its own context
        ET.SubElement(link, "path", {
            "d": f"M {x1} {y - 8} h {LOOP_WIDTH} v 12 h -{LOOP_WIDTH - 2}", **stroke,
            "marker-end": f"url(#{_marker_id(state)})",
        })
        text_x, anchor = x1 + LOOP_WIDTH + 4, "start"
    else:  # an event without subscribers: a dot where it was published
        ET.SubElement(link, "circle", {"cx": str(x1), "cy": str(y), "r": "4", "fill": colour})
        text_x, anchor = x1 + 8, "start"
    text = ET.SubElement(link, "text", {"x": str(text_x), "y": str(y - 5), "text-anchor": anchor, "fill": colour})
    text.text = label


def _marker_id(state: DeliveryState) -> str:
    return f"arrow-{state.replace(' ', '-')}"
