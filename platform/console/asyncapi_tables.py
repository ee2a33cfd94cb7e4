"""The AsyncAPI document (``messaging.asyncapi``) as tables people read: servers, channels,
operations per context, and each message's envelope and data, one row per field.

Plain data for the console's AsyncAPI page (``console.pages``); the page needs no
script, and the raw document is a download beside it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

#: JSON Schema keywords shown as a field's constraints, in this order, as they read.
CONSTRAINTS = (
    ("const", "is {}"), ("enum", "one of {}"), ("minLength", "at least {} characters"),
    ("maxLength", "at most {} characters"), ("pattern", "matches {}"), ("minimum", "≥ {}"),
    ("exclusiveMinimum", "> {}"), ("maximum", "≤ {}"), ("exclusiveMaximum", "< {}"),
    ("minItems", "at least {} items"), ("maxItems", "at most {} items"), ("default", "default {}"),
)
#: Prefix of a reference to a schema of the document's components.
SCHEMA_REF = "#/components/schemas/"


@dataclasses.dataclass(frozen=True)
class FieldRow:
    #: Dotted from the top: ``lines[].sku``.
    field: str
    type: str
    required: bool
    constraints: list[str]
    description: str


@dataclasses.dataclass(frozen=True)
class MessageView:
    name: str
    title: str
    summary: str
    description: str
    version: int
    readable_versions: list[int]
    envelope: list[FieldRow]
    data: list[FieldRow]


def messages(document: dict[str, Any]) -> list[MessageView]:
    """Each message with its CloudEvent's attributes and its data's fields."""
    schemas = document["components"]["schemas"]
    views = []
    for name, message in document["components"]["messages"].items():
        envelope = _resolved(message["payload"]["items"][1]["properties"]["envelope"], schemas)
        views.append(MessageView(
            name=name, title=message["title"], summary=message["summary"], description=message.get("description", ""),
            version=message["x-version"], readable_versions=message["x-readable-versions"],
            # The data's fields are a table of their own.
            envelope=field_rows({**envelope, "properties": {
                name: attribute for name, attribute in envelope["properties"].items() if name != "data"}}, schemas),
            data=field_rows(_resolved(envelope["properties"]["data"], schemas), schemas),
        ))
    return views


def field_rows(schema: dict[str, Any], schemas: dict[str, Any], prefix: str = "") -> list[FieldRow]:
    """A row per field of an object schema, nested objects (and objects in lists) flattened."""
    rows = []
    required = set(schema.get("required", []))
    for name, field in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        rows.append(FieldRow(field=path, type=type_text(field), required=name in required,
                             constraints=constraints(field), description=field.get("description", "")))
        nested = _resolved(field, schemas)
        if nested.get("type") == "array" and isinstance(nested.get("items"), dict):
            nested, path = _resolved(nested["items"], schemas), f"{path}[]"
        if nested.get("properties"):
            rows += field_rows(nested, schemas, prefix=f"{path}.")
    return rows


def type_text(schema: dict[str, Any]) -> str:
    """``string (uuid)``, ``list of ReserveStockLine``, ``number or string``."""
    if "$ref" in schema:
        return schema["$ref"].removeprefix(SCHEMA_REF).rsplit(".", 1)[-1]
    if "anyOf" in schema:
        return " or ".join(type_text(option) for option in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array" and isinstance(schema.get("items"), dict):
        return f"list of {type_text(schema['items'])}"
    return f"{kind} ({schema['format']})" if "format" in schema else str(kind)


def constraints(schema: dict[str, Any]) -> list[str]:
    found = [text.format(_shown(schema[keyword])) for keyword, text in CONSTRAINTS if keyword in schema]
    for option in schema.get("anyOf", []):
        found += [f"as {option.get('type', 'any')}: {c}" for c in constraints(option)]
    return found


def operations_by_context(document: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Each context's operations (its tag), sends first; untagged ones (any context may send
    a command) under "any context"."""
    grouped: dict[str, list[dict[str, str]]] = {}
    for operation_id, operation in document["operations"].items():
        context = operation["tags"][0]["name"] if operation.get("tags") else "any context"
        channel = document["channels"][_last_token(operation["channel"]["$ref"])]
        grouped.setdefault(context, []).append({
            "id": operation_id, "action": operation["action"], "channel": channel["address"],
            "messages": [_last_token(m["$ref"]) for m in operation["messages"]],
            "summary": operation.get("summary", ""),
        })
    return {context: sorted(rows, key=lambda row: (row["action"] != "send", row["messages"]))
            for context, rows in sorted(grouped.items())}


def channels(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Each channel: what it is, its type or arguments, what it is bound to."""
    rows = []
    for channel_id, channel in document["channels"].items():
        amqp = channel.get("bindings", {}).get("amqp", {})
        is_exchange = channel_id.startswith("exchange.")
        rows.append({
            "address": channel["address"],
            "what": "exchange" if is_exchange else "queue",
            "type": amqp.get("exchange", {}).get("type") or channel.get("x-exchange-type", "") if is_exchange else "",
            "arguments": [f"{key}={value}" for key, value in channel.get("x-queue-arguments", {}).items()],
            "bound_to": [f"{bound['exchange']} ({bound['routingKey']})" for bound in channel.get("x-bound-to", [])],
            "messages": list(channel.get("messages", {})),
            "description": channel.get("description", ""),
        })
    return rows


def _resolved(schema: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema and schema["$ref"].startswith(SCHEMA_REF):
        schema = schemas[schema["$ref"].removeprefix(SCHEMA_REF)]
    return schema


def _last_token(ref: str) -> str:
    return ref.rsplit("/", 1)[-1].replace("~1", "/").replace("~0", "~")


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
