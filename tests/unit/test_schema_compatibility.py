"""The breaking-change rules, one test each: an old and a new pydantic model, as a contract's
version would change in place, and what ``breaking_changes`` says of their JSON Schemas."""

import enum
import uuid
from decimal import Decimal
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict, Field

from messaging.schema_compatibility import (
    CONSTRAINT_TIGHTENED,
    ENUM_VALUE_REMOVED,
    FIELD_REMOVED,
    FIELD_RENAMED,
    MADE_REQUIRED,
    REQUIRED_FIELD_ADDED,
    TYPE_NARROWED,
    SchemaChange,
    breaking_changes,
)


def changes(old: type[BaseModel], new: type[BaseModel]) -> list[SchemaChange]:
    return breaking_changes(old.model_json_schema(), new.model_json_schema())


def rules(old: type[BaseModel], new: type[BaseModel]) -> list[tuple[str, str]]:
    return [(change.path, change.rule) for change in changes(old, new)]


class Contract(BaseModel):
    """As the bus's contracts are: fields it does not declare are refused at publish."""

    model_config = ConfigDict(extra="forbid")


# ------------------------------------------------------------------ fields


def test_a_removed_field_breaks_the_consumers_that_read_it():
    class Old(Contract):
        order_id: uuid.UUID
        note: str = ""

    class New(Contract):
        order_id: uuid.UUID

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("note", FIELD_REMOVED)


def test_a_removed_required_field_says_old_consumers_refuse_messages_without_it():
    class Old(Contract):
        order_id: uuid.UUID
        reason: str

    class New(Contract):
        order_id: uuid.UUID

    [change] = changes(Old, New)

    assert change.rule == FIELD_REMOVED and "required" in change.detail


def test_a_renamed_field_is_named_with_its_new_name():
    class Old(Contract):
        reason: str = Field(max_length=200)

    class New(Contract):
        why: str = Field(max_length=200)

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("reason", FIELD_RENAMED)
    assert "'why'" in change.detail


def test_a_field_replaced_by_another_of_another_schema_is_a_removal_and_an_addition():
    class Old(Contract):
        reason: str

    class New(Contract):
        code: int

    assert rules(Old, New) == [("reason", FIELD_REMOVED), ("code", REQUIRED_FIELD_ADDED)]


def test_a_required_field_added_breaks_the_messages_already_written():
    class Old(Contract):
        sku: str

    class New(Contract):
        sku: str
        currency: str

    assert rules(Old, New) == [("currency", REQUIRED_FIELD_ADDED)]


def test_an_optional_field_made_required_breaks_the_messages_written_without_it():
    class Old(Contract):
        sku: str
        placed: bool = False

    class New(Contract):
        sku: str
        placed: bool

    assert rules(Old, New) == [("placed", MADE_REQUIRED)]


# ------------------------------------------------------------------ types


@pytest.mark.parametrize(
    ("old_type", "new_type"),
    [
        (float, int),           # number -> integer: 1.5 is refused
        (str, int),             # changed
        (int | str, int),       # a union loses a member
    ],
    ids=["number-to-integer", "string-to-integer", "union-loses-a-member"],
)
def test_a_narrowed_or_changed_type_breaks(old_type, new_type):
    Old = type("Old", (Contract,), {"__annotations__": {"amount": old_type}})
    New = type("New", (Contract,), {"__annotations__": {"amount": new_type}})

    assert rules(Old, New) == [("amount", TYPE_NARROWED)]


def test_a_field_that_was_nullable_and_is_no_longer_breaks_the_messages_that_held_null():
    class Old(Contract):
        reason: str | None

    class New(Contract):
        reason: str

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("reason", TYPE_NARROWED)
    assert "null no longer accepted" in change.detail


# ------------------------------------------------------------------ constraints


@pytest.mark.parametrize(
    ("old_field", "new_field", "keyword"),
    [
        (Field(max_length=64), Field(max_length=32), "maxLength"),
        (Field(min_length=1), Field(min_length=2), "minLength"),
        (Field(), Field(pattern=r"^[A-Z]+$"), "pattern"),
        (Field(pattern=r"^[A-Z]+$"), Field(pattern=r"^[A-Z]{3}$"), "pattern"),
    ],
    ids=["maxLength-lowered", "minLength-raised", "pattern-added", "pattern-changed"],
)
def test_a_tightened_string_constraint_breaks(old_field, new_field, keyword):
    Old = type("Old", (Contract,), {"__annotations__": {"code": str}, "code": old_field})
    New = type("New", (Contract,), {"__annotations__": {"code": str}, "code": new_field})

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("code", CONSTRAINT_TIGHTENED)
    assert keyword in change.detail


@pytest.mark.parametrize(
    ("old_field", "new_field", "keyword"),
    [
        (Field(le=100), Field(le=10), "maximum"),
        (Field(le=100), Field(lt=100), "exclusiveMaximum"),
        (Field(lt=100), Field(lt=50), "exclusiveMaximum"),
        (Field(ge=0), Field(ge=1), "minimum"),
        (Field(ge=0), Field(gt=0), "exclusiveMinimum"),
        (Field(), Field(gt=0), "exclusiveMinimum"),
        (Field(), Field(multiple_of=5), "multipleOf"),
        (Field(multiple_of=5), Field(multiple_of=3), "multipleOf"),
    ],
    ids=["maximum-lowered", "maximum-made-exclusive", "exclusiveMaximum-lowered", "minimum-raised",
         "minimum-made-exclusive", "exclusiveMinimum-added", "multipleOf-added", "multipleOf-changed"],
)
def test_a_tightened_number_constraint_breaks(old_field, new_field, keyword):
    Old = type("Old", (Contract,), {"__annotations__": {"quantity": int}, "quantity": old_field})
    New = type("New", (Contract,), {"__annotations__": {"quantity": int}, "quantity": new_field})

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("quantity", CONSTRAINT_TIGHTENED)
    assert keyword in change.detail


@pytest.mark.parametrize(
    ("old_field", "new_field", "keyword"),
    [
        (Field(max_length=10), Field(max_length=5), "maxItems"),
        (Field(min_length=1), Field(min_length=2), "minItems"),
    ],
    ids=["maxItems-lowered", "minItems-raised"],
)
def test_a_tightened_list_constraint_breaks(old_field, new_field, keyword):
    Old = type("Old", (Contract,), {"__annotations__": {"skus": list[str]}, "skus": old_field})
    New = type("New", (Contract,), {"__annotations__": {"skus": list[str]}, "skus": new_field})

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("skus", CONSTRAINT_TIGHTENED)
    assert keyword in change.detail


def test_fewer_decimal_places_break_the_prices_written_with_more():
    class Old(Contract):
        price: Decimal = Field(decimal_places=2)

    class New(Contract):
        price: Decimal = Field(decimal_places=1)

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("price", CONSTRAINT_TIGHTENED) and "pattern" in change.detail


def test_a_raised_minimum_of_a_decimal_is_found_in_its_number_form():
    class Old(Contract):
        price: Decimal = Field(ge=0)

    class New(Contract):
        price: Decimal = Field(gt=0)

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("price", CONSTRAINT_TIGHTENED) and "exclusiveMinimum" in change.detail


def test_a_format_added_breaks_the_strings_that_did_not_have_it():
    class Old(Contract):
        order_id: str

    class New(Contract):
        order_id: uuid.UUID

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("order_id", CONSTRAINT_TIGHTENED) and "format 'uuid'" in change.detail


# ------------------------------------------------------------------ enums


def test_a_literal_value_removed_breaks_the_messages_that_carry_it():
    class Old(Contract):
        reason: Literal["declined", "expired", "fraud"]

    class New(Contract):
        reason: Literal["declined", "fraud"]

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("reason", ENUM_VALUE_REMOVED) and "'expired'" in change.detail


def test_an_enum_member_removed_is_found_through_its_definition():
    class OldStatus(enum.Enum):
        PAID = "paid"
        REFUNDED = "refunded"

    class NewStatus(enum.Enum):
        PAID = "paid"

    class Old(Contract):
        status: OldStatus

    class New(Contract):
        status: NewStatus

    assert rules(Old, New) == [("status", ENUM_VALUE_REMOVED)]


def test_a_string_limited_to_values_is_a_tightened_constraint():
    class Old(Contract):
        currency: str

    class New(Contract):
        currency: Literal["EUR", "USD"]

    assert rules(Old, New) == [("currency", CONSTRAINT_TIGHTENED)]


# ------------------------------------------------------------------ nested models


class OldLine(BaseModel):
    sku: str
    quantity: int = Field(gt=0)


class NewLine(BaseModel):
    sku: str
    quantity: int = Field(gt=0, le=99)


def test_a_change_inside_a_nested_model_is_named_by_its_path():
    class Old(Contract):
        lines: list[OldLine]

    class New(Contract):
        lines: list[NewLine]

    [change] = changes(Old, New)

    assert (change.path, change.rule) == ("lines[].quantity", CONSTRAINT_TIGHTENED)


def test_a_field_removed_from_a_nested_model_of_a_mapping_is_named_by_its_path():
    class Smaller(BaseModel):
        sku: str

    class Old(Contract):
        lines_by_sku: dict[str, OldLine]

    class New(Contract):
        lines_by_sku: dict[str, Smaller]

    assert rules(Old, New) == [("lines_by_sku{}.quantity", FIELD_REMOVED)]


def test_a_recursive_model_is_compared_to_the_end():
    class OldNode(BaseModel):
        name: str
        children: list["OldNode"] = []

    class NewNode(BaseModel):
        name: str = Field(max_length=10)
        children: list["NewNode"] = []

    class Old(Contract):
        tree: OldNode

    class New(Contract):
        tree: NewNode

    assert rules(Old, New) == [("tree.name", CONSTRAINT_TIGHTENED)]


# ------------------------------------------------------------------ what passes


def test_an_optional_field_added_passes():
    class Old(Contract):
        sku: str

    class New(Contract):
        sku: str
        note: str = ""

    assert changes(Old, New) == []


def test_loosened_constraints_pass():
    class Old(Contract):
        sku: str = Field(min_length=2, max_length=32, pattern=r"^[A-Z]+$")
        quantity: int = Field(gt=0, le=10, multiple_of=10)
        lines: list[str] = Field(min_length=2, max_length=5)

    class New(Contract):
        sku: str = Field(min_length=1, max_length=64)
        quantity: int = Field(ge=0, multiple_of=5)
        lines: list[str] = Field(min_length=1)

    assert changes(Old, New) == []


def test_an_enum_value_added_and_a_type_widened_pass():
    class Old(Contract):
        reason: Literal["declined"]
        amount: int
        code: int

    class New(Contract):
        reason: Literal["declined", "expired"]
        amount: float
        code: int | str | None = None

    assert changes(Old, New) == []


def test_titles_descriptions_and_a_renamed_nested_model_pass():
    class Line(BaseModel):
        """A line."""

        sku: str = Field(description="the product")

    class Renamed(BaseModel):
        """Another text altogether."""

        sku: str = Field(description="the product's stock-keeping unit", title="SKU")

    class Old(Contract):
        lines: list[Line]

    class New(Contract):
        """Now with a docstring."""

        lines: list[Renamed]

    assert changes(Old, New) == []


def test_a_same_schema_compares_clean():
    class Old(Contract):
        order_id: uuid.UUID
        lines: list[OldLine] = Field(min_length=1)
        price: Decimal = Field(ge=0, decimal_places=2)

    assert changes(Old, Old) == []


def test_a_reference_outside_the_schema_is_refused_with_why():
    old = {"properties": {"a": {"$ref": "https://example.com/a.json"}}}

    with pytest.raises(ValueError, match="only references inside the schema"):
        breaking_changes(old, old)
