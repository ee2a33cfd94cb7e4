"""Whether a contract version's new JSON Schema still accepts what its old one did.

Messages the old code wrote are still in flight when the new code starts, and the old
code keeps writing them until every publisher is replaced: a consumer running the new
code must read all of them, and every field the old consumers read must still be
written. ``breaking_changes`` names each place where a new schema breaks that, field by
field, following ``$ref``s into ``$defs`` (nested models). What only lets the new code
accept more (an optional field added, a constraint loosened, an enum value or a union
member added, a type widened from integer to number) passes; so do titles and
descriptions. A field path reads ``lines[].quantity``: ``[]`` an array's items, ``{}``
a mapping's values.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Iterator
from typing import Any

FIELD_REMOVED = "field removed"
FIELD_RENAMED = "field renamed"
REQUIRED_FIELD_ADDED = "required field added"
MADE_REQUIRED = "optional field made required"
TYPE_NARROWED = "type narrowed or changed"
CONSTRAINT_TIGHTENED = "constraint tightened"
ENUM_VALUE_REMOVED = "enum value removed"

#: Keywords that describe a value without constraining it: a change to them breaks nothing.
ANNOTATIONS = frozenset({"title", "description", "examples", "default", "deprecated", "$comment"})
#: Keywords holding schemas by name (fields, definitions).
NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "$defs", "definitions"})
#: Keywords whose value bounds a size from above or below: lowering an upper one, or raising
#: a lower one, refuses values the old schema accepted.
UPPER_SIZE_BOUNDS = ("maxLength", "maxItems", "maxProperties")
LOWER_SIZE_BOUNDS = ("minLength", "minItems", "minProperties")


@dataclasses.dataclass(frozen=True)
class SchemaChange:
    """One way a new schema breaks data or readers of the old one."""

    #: Where, as a field path (``lines[].quantity``); empty for the message as a whole.
    path: str
    #: Which rule it breaks: one of the constants above.
    rule: str
    detail: str


def breaking_changes(old: dict[str, Any], new: dict[str, Any]) -> list[SchemaChange]:
    """Every change from ``old`` to ``new`` (two JSON Schemas with their own ``$defs``) that breaks."""
    return _Comparison(old, new).compare(old, new, path="")


class _Comparison:
    def __init__(self, old_root: dict[str, Any], new_root: dict[str, Any]) -> None:
        self.old_root = old_root
        self.new_root = new_root
        # Pairs of references being compared: a recursive model (a tree of nodes) meets its
        # own pair again, which is then taken as compatible while the first visit decides.
        self.following: set[tuple[str, str]] = set()

    def compare(self, old: dict[str, Any], new: dict[str, Any], *, path: str) -> list[SchemaChange]:
        pair = (old.get("$ref", ""), new.get("$ref", ""))
        if all(pair):
            if pair in self.following:
                return []
            self.following.add(pair)
        try:
            return self._compare_resolved(resolve(old, self.old_root), resolve(new, self.new_root), path=path)
        finally:
            self.following.discard(pair)

    def _compare_resolved(self, old: dict[str, Any], new: dict[str, Any], *, path: str) -> list[SchemaChange]:
        old_branches = list(_branches(old, self.old_root))
        new_branches = list(_branches(new, self.new_root))
        if len(old_branches) == 1 and len(new_branches) == 1:
            return self._compare_branch(old_branches[0], new_branches[0], path=path)
        # A union: every member of the old one must still be accepted by some member of the new.
        # Where none accepts it whole, the nearest member of an overlapping type says why.
        changes = []
        for old_branch in old_branches:
            attempts = [self._compare_branch(old_branch, new_branch, path=path)
                        for new_branch in new_branches if _types_overlap(old_branch, new_branch)]
            if any(not attempt for attempt in attempts):
                continue
            if attempts:
                changes.extend(min(attempts, key=len))
            else:
                changes.append(SchemaChange(path, TYPE_NARROWED, f"{_describe_type(old_branch)} no longer accepted"))
        return changes

    def _compare_branch(self, old: dict[str, Any], new: dict[str, Any], *, path: str) -> list[SchemaChange]:
        old_types, new_types = _json_types(old), _json_types(new)
        if new_types is not None and (old_types is None or not all(_accepts(new_types, t) for t in old_types)):
            # Once the type differs, its constraints and fields are another type's: one finding says it.
            return [SchemaChange(path, TYPE_NARROWED, f"was {_describe_type(old)}, now {_describe_type(new)}")]
        changes = [*_enum_changes(old, new, path=path), *_constraint_changes(old, new, path=path)]
        if "properties" in old or "properties" in new:
            changes.extend(self._compare_fields(old, new, path=path))
        if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
            changes.extend(self.compare(old["items"], new["items"], path=f"{path}[]"))
        # A tuple's length is its minItems and maxItems, compared above: here its common positions.
        positions = zip(old.get("prefixItems", []), new.get("prefixItems", []), strict=False)
        for index, (old_item, new_item) in enumerate(positions):
            changes.extend(self.compare(old_item, new_item, path=f"{path}[{index}]"))
        old_values, new_values = old.get("additionalProperties"), new.get("additionalProperties")
        if isinstance(old_values, dict) and isinstance(new_values, dict):
            changes.extend(self.compare(old_values, new_values, path=f"{path}{{}}"))
        return changes

    def _compare_fields(self, old: dict[str, Any], new: dict[str, Any], *, path: str) -> list[SchemaChange]:
        old_fields, new_fields = old.get("properties", {}), new.get("properties", {})
        old_required, new_required = set(old.get("required", ())), set(new.get("required", ()))
        removed = [name for name in old_fields if name not in new_fields]
        added = [name for name in new_fields if name not in old_fields]
        changes = []
        renamed_to = set()
        for name in removed:
            # A field removed while another of the very same schema appears is most likely renamed:
            # say so, since old messages carry the old name and the new code reads the new one.
            twin = next((other for other in added if other not in renamed_to and self._same_schema(
                old_fields[name], new_fields[other])), None)
            if twin is not None:
                renamed_to.add(twin)
                changes.append(SchemaChange(_field_path(path, name), FIELD_RENAMED,
                                            f"renamed to {twin!r}: messages of the old code carry {name!r}, "
                                            f"consumers of the old code read it"))
            else:
                required = " (required: consumers of the old code refuse messages without it)" \
                    if name in old_required else ""
                changes.append(SchemaChange(_field_path(path, name), FIELD_REMOVED,
                                            f"no longer written, consumers of the old code read it{required}"))
        for name in added:
            if name in new_required and name not in renamed_to:
                changes.append(SchemaChange(_field_path(path, name), REQUIRED_FIELD_ADDED,
                                            "a new field without a default: messages of the old code lack it"))
        for name in old_fields.keys() & new_fields.keys():
            if name in new_required and name not in old_required:
                changes.append(SchemaChange(_field_path(path, name), MADE_REQUIRED,
                                            "its default is gone: messages of the old code may lack it"))
        for name in old_fields:
            if name in new_fields:
                changes.extend(self.compare(old_fields[name], new_fields[name], path=_field_path(path, name)))
        return changes

    def _same_schema(self, old: dict[str, Any], new: dict[str, Any]) -> bool:
        return _without_annotations(resolve(old, self.old_root)) == _without_annotations(resolve(new, self.new_root))


def resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``schema`` with its ``$ref`` (and a lone ``allOf``, pydantic's older spelling of one)
    replaced by what it points to in ``root``, its own keywords kept over the target's."""
    while True:
        if "$ref" in schema:
            reference = schema["$ref"]
            target = _pointer_target(reference, root)
            schema = {**target, **{key: value for key, value in schema.items() if key != "$ref"}}
        elif isinstance(schema.get("allOf"), list) and len(schema["allOf"]) == 1:
            (only,) = schema["allOf"]
            schema = {**only, **{key: value for key, value in schema.items() if key != "allOf"}}
        else:
            return schema


def _pointer_target(reference: str, root: dict[str, Any]) -> dict[str, Any]:
    if not reference.startswith("#/"):
        raise ValueError(f"cannot follow $ref {reference!r}: only references inside the schema are read")
    target: Any = root
    for part in reference[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")  # JSON Pointer's escapes (RFC 6901)
        if not isinstance(target, dict) or part not in target:
            raise ValueError(f"$ref {reference!r} points to nothing in its schema")
        target = target[part]
    return target


def _branches(schema: dict[str, Any], root: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The alternatives a value may match: the members of ``anyOf``/``oneOf`` (nested ones
    flattened) or of a list of types, else the schema itself."""
    members = schema.get("anyOf") or schema.get("oneOf")
    if isinstance(members, list):
        for member in members:
            yield from _branches(resolve(member, root), root)
    elif isinstance(schema.get("type"), list):
        for json_type in schema["type"]:
            yield {**schema, "type": json_type}
    else:
        yield schema


def _json_types(schema: dict[str, Any]) -> set[str] | None:
    """The JSON types a branch accepts; None when any."""
    if isinstance(schema.get("type"), str):
        return {schema["type"]}
    values = _enum_values(schema)
    if values is not None:
        return {_json_type_of(value) for value in values}
    return None


def _json_type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _accepts(types: set[str], json_type: str) -> bool:
    # Every integer is a number: widening integer to number loses no value.
    return json_type in types or (json_type == "integer" and "number" in types)


def _types_overlap(old: dict[str, Any], new: dict[str, Any]) -> bool:
    old_types, new_types = _json_types(old), _json_types(new)
    if old_types is None or new_types is None:
        return True
    return any(_accepts(new_types, json_type) for json_type in old_types)


def _describe_type(schema: dict[str, Any]) -> str:
    types = _json_types(schema)
    if types is None:
        return "any value"
    described = " or ".join(sorted(types))
    return f"{described} ({schema['format']})" if "format" in schema else described


def _enum_values(schema: dict[str, Any]) -> list[Any] | None:
    """The values a branch is limited to (``enum``, or a ``Literal``'s ``const``); None when not limited."""
    if "const" in schema:
        return [schema["const"]]
    if isinstance(schema.get("enum"), list):
        return schema["enum"]
    return None


def _enum_changes(old: dict[str, Any], new: dict[str, Any], *, path: str) -> list[SchemaChange]:
    old_values, new_values = _enum_values(old), _enum_values(new)
    if new_values is None:
        return []
    if old_values is None:
        return [SchemaChange(path, CONSTRAINT_TIGHTENED, f"now limited to the values {new_values!r}")]
    return [SchemaChange(path, ENUM_VALUE_REMOVED, f"{value!r} no longer accepted")
            for value in old_values if value not in new_values]


def _constraint_changes(old: dict[str, Any], new: dict[str, Any], *, path: str) -> list[SchemaChange]:
    changes = []

    def tightened(detail: str) -> None:
        changes.append(SchemaChange(path, CONSTRAINT_TIGHTENED, detail))

    for keyword in UPPER_SIZE_BOUNDS:
        if keyword in new and (keyword not in old or new[keyword] < old[keyword]):
            tightened(f"{keyword} {_was(old, keyword)} became {new[keyword]}")
    for keyword in LOWER_SIZE_BOUNDS:
        if keyword in new and (keyword not in old or new[keyword] > old[keyword]):
            tightened(f"{keyword} {_was(old, keyword)} became {new[keyword]}")
    for side in ("minimum", "maximum"):
        old_bound, new_bound = _numeric_bound(old, side), _numeric_bound(new, side)
        if _bound_tighter(new_bound, old_bound, upper=side == "maximum"):
            tightened(f"{_describe_bound(old_bound, side)} became {_describe_bound(new_bound, side)}")
    if "multipleOf" in new and not _is_multiple(old.get("multipleOf"), of=new["multipleOf"]):
        tightened(f"multipleOf {_was(old, 'multipleOf')} became {new['multipleOf']}")
    # Two regular expressions cannot be compared: any new or changed pattern may refuse old values
    # (a Decimal's decimal_places is such a pattern in pydantic's schema).
    for keyword in ("pattern", "format"):
        if keyword in new and new[keyword] != old.get(keyword):
            tightened(f"{keyword} {old[keyword]!r} became {new[keyword]!r}" if keyword in old
                      else f"{keyword} {new[keyword]!r} added")
    if new.get("uniqueItems") and not old.get("uniqueItems"):
        tightened("uniqueItems added")
    return changes


def _was(schema: dict[str, Any], keyword: str) -> str:
    return str(schema[keyword]) if keyword in schema else "(none)"


def _numeric_bound(schema: dict[str, Any], side: str) -> tuple[float, bool] | None:
    """A number's lower (``minimum``) or upper (``maximum``) bound as (value, exclusive), the tighter
    of the inclusive and the exclusive keyword when both are given; None when unbounded."""
    exclusive_keyword = "exclusive" + side.capitalize()
    bounds = [(schema[side], False)] if side in schema else []
    if isinstance(schema.get(exclusive_keyword), (int, float)) and not isinstance(schema[exclusive_keyword], bool):
        bounds.append((schema[exclusive_keyword], True))
    if not bounds:
        return None
    upper = side == "maximum"
    return min(bounds) if upper else max(bounds)


def _bound_tighter(new: tuple[float, bool] | None, old: tuple[float, bool] | None, *, upper: bool) -> bool:
    if new is None:
        return False
    if old is None:
        return True
    (new_value, new_exclusive), (old_value, old_exclusive) = new, old
    if new_value != old_value:
        return new_value < old_value if upper else new_value > old_value
    return new_exclusive and not old_exclusive


def _describe_bound(bound: tuple[float, bool] | None, side: str) -> str:
    if bound is None:
        return f"no {side}"
    value, exclusive = bound
    return f"{'exclusive' + side.capitalize() if exclusive else side} {value}"


def _is_multiple(value: float | None, *, of: float) -> bool:
    """Whether every multiple of ``value`` is a multiple of ``of`` (so ``of`` refuses none of them)."""
    if value is None:
        return False
    # Decimals from their text: 0.3 is not a multiple of 0.1 in binary floating point.
    return decimal.Decimal(str(value)) % decimal.Decimal(str(of)) == 0


def _without_annotations(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_annotations(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    stripped = {}
    for key, value in schema.items():
        if key in ANNOTATIONS:
            continue
        if key in NAMED_SCHEMAS and isinstance(value, dict):
            # Names here are fields or definitions, never keywords: a field called "title" stays.
            stripped[key] = {name: _without_annotations(member) for name, member in value.items()}
        elif key in ("enum", "const"):
            stripped[key] = value
        else:
            stripped[key] = _without_annotations(value)
    return stripped


def _field_path(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
