"""``manage.py bus_contracts check|lock`` on a lock file of the test's own (``BUS_CONTRACTS_LOCK`` in
``tmp_path``) and contracts of its own in the registry: the code changes between a lock and a check
as it would between two commits. The first test is CI's: the committed lock file matches the code."""

import json
import uuid
from io import StringIO

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from pydantic import BaseModel, Field

from messaging.contract_lock import (
    CONTRACT_REMOVED,
    KIND_CHANGED,
    NO_UPCASTER,
    NOT_LOCKED,
    VERSION_LOWERED,
    read_lock,
)
from messaging.contracts import Command, Event
from messaging.registry import registry
from messaging.schema_compatibility import CONSTRAINT_TIGHTENED, FIELD_REMOVED, REQUIRED_FIELD_ADDED

#: Where the contracts below say they are defined: the catalog owns them, as a context owns its messages.
CATALOG_MESSAGES = "apps.catalog.messages"
PARCEL_SHIPPED = "catalog.ParcelShipped"


def test_the_committed_lock_file_matches_the_contracts(capsys):
    # CI's breaking-change check: a contract changed incompatibly without a new version (or changed
    # at all without `bus_contracts lock`) fails here.
    call_command("bus_contracts", "check")

    assert "no breaking change" in capsys.readouterr().out


@pytest.fixture
def lock_file(settings, tmp_path):
    settings.BUS_CONTRACTS_LOCK = tmp_path / "contracts.lock.json"
    return settings.BUS_CONTRACTS_LOCK


@pytest.fixture
def code(monkeypatch):
    """Make the registry's contracts these, as if the code had them."""
    return lambda *contracts: monkeypatch.setattr(registry, "contracts", list(contracts))


def run(*args) -> tuple[str, str | None]:
    """``bus_contracts`` with ``args``: what it printed, and its error when it exits 1."""
    out = StringIO()
    try:
        call_command("bus_contracts", *args, stdout=out)
    except CommandError as error:
        return out.getvalue(), str(error)
    return out.getvalue(), None


def shipped_v1():
    class ParcelShipped(Event):
        __module__ = CATALOG_MESSAGES
        order_id: uuid.UUID
        carrier: str = Field(max_length=32)

    return ParcelShipped


def shipped_v2(*, upcaster: bool):
    class ParcelShipped(Event):
        __module__ = CATALOG_MESSAGES
        version = 2
        order_id: uuid.UUID
        carrier: str = Field(max_length=32)
        tracking_code: str

    if upcaster:
        @ParcelShipped.upcaster(from_version=1)
        def add_tracking_code(data):
            return {**data, "tracking_code": ""}

    return ParcelShipped


# ------------------------------------------------------------------ lock


def test_lock_writes_each_contract_with_its_kind_owner_and_schema_sorted_and_pretty(lock_file, code):
    code(shipped_v1())

    output, error = run("lock")

    assert error is None and "added catalog.ParcelShipped v1" in output
    text = lock_file.read_text()
    written = json.loads(text)["contracts"][PARCEL_SHIPPED]
    assert (written["kind"], written["context"]) == ("event", "catalog")
    assert written["versions"]["1"]["properties"]["carrier"]["maxLength"] == 32
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def test_locking_the_same_code_again_changes_no_byte(lock_file, code):
    code(shipped_v1())
    run("lock")
    first = lock_file.read_bytes()

    output, error = run("lock")

    assert error is None and "is up to date" in output
    assert lock_file.read_bytes() == first


def test_lock_keeps_the_versions_locked_before_as_they_were(lock_file, code):
    code(shipped_v1())
    run("lock")
    version_1 = read_lock(lock_file).contracts[PARCEL_SHIPPED].versions[1]
    code(shipped_v2(upcaster=True))

    output, error = run("lock")

    assert error is None and "added catalog.ParcelShipped v2" in output
    versions = read_lock(lock_file).contracts[PARCEL_SHIPPED].versions
    assert versions[1] == version_1
    assert "tracking_code" in versions[2]["required"]


def test_lock_refuses_a_breaking_change_to_a_locked_version_and_leaves_the_file(lock_file, code):
    code(shipped_v1())
    run("lock")
    before = lock_file.read_bytes()

    class ParcelShipped(Event):
        __module__ = CATALOG_MESSAGES
        order_id: uuid.UUID

    code(ParcelShipped)
    output, error = run("lock")

    assert error.startswith("refused: 1 breaking change to")
    assert output == (f"catalog.ParcelShipped v1: carrier: {FIELD_REMOVED}: no longer written, consumers of the old "
                      "code read it (required: consumers of the old code refuse messages without it)\n")
    assert lock_file.read_bytes() == before


def test_lock_with_force_locks_a_breaking_change_and_check_then_passes(lock_file, code):
    code(shipped_v1())
    run("lock")

    class ParcelShipped(Event):
        __module__ = CATALOG_MESSAGES
        order_id: uuid.UUID

    code(ParcelShipped)
    output, error = run("lock", "--force")

    assert error is None and "updated catalog.ParcelShipped v1" in output
    assert run("check")[1] is None


def test_a_file_that_is_not_a_lock_file_is_refused_with_why_and_left_alone(lock_file, code):
    code(shipped_v1())
    lock_file.write_text('{"contracts": []}')

    for action in ("check", "lock"):
        _, error = run(action)

        assert "is not a contracts lock file" in error and "contracts" in error
    assert lock_file.read_text() == '{"contracts": []}'


# ------------------------------------------------------------------ check


def test_check_passes_with_a_summary_when_the_code_matches_the_lock(lock_file, code):
    code(shipped_v1())
    run("lock")

    output, error = run("check")

    assert error is None
    assert output == f"1 contracts match {lock_file} (1 versions locked): no breaking change\n"


def test_check_without_a_lock_file_says_to_lock(lock_file, code):
    code(shipped_v1())

    _, error = run("check")

    assert "no contracts lock file" in error and "bus_contracts lock" in error


def test_check_names_the_contract_version_field_path_and_rule_of_a_breaking_change(lock_file, code):
    class Line(BaseModel):
        sku: str
        quantity: int = Field(gt=0)

    class StricterLine(BaseModel):
        sku: str
        quantity: int = Field(gt=0, le=99)

    class ShipParcel(Command):
        __module__ = CATALOG_MESSAGES
        lines: list[Line]

    code(ShipParcel)
    run("lock")

    class ShipParcel(Command):  # the same contract, changed
        __module__ = CATALOG_MESSAGES
        lines: list[StricterLine]

    code(ShipParcel)
    output, error = run("check")

    assert output == (f"catalog.ShipParcel v1: lines[].quantity: {CONSTRAINT_TIGHTENED}: "
                      "no maximum became maximum 99\n")
    assert error.startswith(f"1 breaking change against {lock_file}: change a contract incompatibly only in a new "
                            "version")


def test_check_finds_a_required_field_added_in_place_and_says_to_bump_the_version(lock_file, code):
    code(shipped_v1())
    run("lock")

    class ParcelShipped(Event):
        __module__ = CATALOG_MESSAGES
        order_id: uuid.UUID
        carrier: str = Field(max_length=32)
        tracking_code: str

    code(ParcelShipped)
    output, error = run("check")

    assert output.startswith(f"catalog.ParcelShipped v1: tracking_code: {REQUIRED_FIELD_ADDED}:")
    assert "in a new version" in error


def test_an_additive_change_is_not_locked_until_lock_records_it_without_force(lock_file, code):
    code(shipped_v1())
    run("lock")

    class ParcelShipped(Event):
        __module__ = CATALOG_MESSAGES
        order_id: uuid.UUID
        carrier: str = Field(max_length=64)  # loosened
        note: str = ""  # optional, added

    code(ParcelShipped)
    output, error = run("check")

    # The loosened length is said too: consumers of the code before refuse a longer carrier.
    assert output == (f"catalog.ParcelShipped v1: {NOT_LOCKED}: changed compatibly since it was locked: "
                      "run `python manage.py bus_contracts lock`\n"
                      "catalog.ParcelShipped v1: carrier: consumers first: the code before accepts less here "
                      "(maxLength 64 became 32, reading from this code to it): deploy every consumer before any "
                      "publisher writes such a value, or make it a new version\n")
    assert error == f"2 changes not locked in {lock_file}: run `python manage.py bus_contracts lock` and commit the file"
    locked, error = run("lock")
    assert error is None and "carrier: consumers first" in locked
    assert run("check")[1] is None


def test_an_optional_field_added_alone_needs_no_order(lock_file, code):
    code(shipped_v1())
    run("lock")

    class ParcelShipped(Event):
        __module__ = CATALOG_MESSAGES
        order_id: uuid.UUID
        carrier: str = Field(max_length=32)
        note: str = ""  # consumers of the code before ignore it

    code(ParcelShipped)
    output, _ = run("check")

    assert NOT_LOCKED in output and "consumers first" not in output


def test_a_contract_not_in_the_lock_is_not_locked(lock_file, code):
    code(shipped_v1())
    run("lock")

    class ParcelLost(Event):
        __module__ = CATALOG_MESSAGES
        order_id: uuid.UUID

    code(shipped_v1(), ParcelLost)
    output, error = run("check")

    assert output == f"catalog.ParcelLost v1: {NOT_LOCKED}: a new contract: run `python manage.py bus_contracts lock`\n"
    assert error is not None


def test_a_contract_removed_from_the_code_is_found_and_only_force_drops_it(lock_file, code):
    code(shipped_v1())
    run("lock")

    code()
    output, error = run("check")

    assert error is not None
    assert output.startswith(f"catalog.ParcelShipped: {CONTRACT_REMOVED}: in the lock file but no longer in the code")
    assert run("lock")[1].startswith("refused")
    output, _ = run("lock", "--force")
    assert "dropped catalog.ParcelShipped v1" in output
    assert read_lock(lock_file).contracts == {}


def test_a_contract_that_changed_kind_is_found(lock_file, code):
    code(shipped_v1())
    run("lock")

    class ParcelShipped(Command):
        __module__ = CATALOG_MESSAGES
        order_id: uuid.UUID
        carrier: str = Field(max_length=32)

    code(ParcelShipped)
    output, _ = run("check")

    assert output.startswith(f"catalog.ParcelShipped: {KIND_CHANGED}: locked as event, now command")


def test_a_version_lower_than_locked_is_found(lock_file, code):
    code(shipped_v2(upcaster=True))
    run("lock")

    code(shipped_v1())
    output, _ = run("check")

    assert f"catalog.ParcelShipped v1: {VERSION_LOWERED}: version 2 is locked" in output
    assert run("lock", "--force")[1] is None
    assert list(read_lock(lock_file).contracts[PARCEL_SHIPPED].versions) == [1]
    assert run("check")[1] is None


def test_a_new_version_without_an_upcaster_from_the_locked_one_is_found_before_it_is_locked(lock_file, code):
    code(shipped_v1())
    run("lock")

    code(shipped_v2(upcaster=False))
    output, _ = run("check")

    assert output.splitlines() == [
        f"catalog.ParcelShipped v2: {NOT_LOCKED}: a new version: run `python manage.py bus_contracts lock`",
        (f"catalog.ParcelShipped v2: {NO_UPCASTER}: consumers of the new code could not read messages of version 1 "
         "still in flight: register `@ParcelShipped.upcaster(from_version=1)`"),
    ]
    assert run("lock")[1].startswith("refused: 1 breaking change to")


def test_a_locked_new_version_whose_upcaster_was_removed_is_found(lock_file, code):
    code(shipped_v1())
    run("lock")
    code(shipped_v2(upcaster=True))
    run("lock")

    code(shipped_v2(upcaster=False))
    output, _ = run("check")

    assert output.splitlines() == [
        (f"catalog.ParcelShipped v2: {NO_UPCASTER}: consumers of the new code could not read messages of version 1 "
         "still in flight: register `@ParcelShipped.upcaster(from_version=1)`"),
    ]


def test_lock_with_force_drops_the_versions_the_code_no_longer_reads(lock_file, code):
    code(shipped_v1())
    run("lock")
    code(shipped_v2(upcaster=False))

    output, error = run("lock", "--force")

    assert error is None and "dropped catalog.ParcelShipped v1" in output
    assert list(read_lock(lock_file).contracts[PARCEL_SHIPPED].versions) == [2]
    assert run("check")[1] is None


def test_a_new_version_with_its_upcaster_passes_once_locked(lock_file, code):
    code(shipped_v1())
    run("lock")
    code(shipped_v2(upcaster=True))

    assert run("lock")[1] is None
    output, error = run("check")

    assert error is None and "(2 versions locked): no breaking change" in output


def test_check_in_json_lists_the_findings_for_machines(lock_file, code):
    code(shipped_v1())
    run("lock")
    code()

    output, error = run("check", "--format", "json")

    assert json.loads(output) == [{
        "message_type": PARCEL_SHIPPED, "version": None, "path": "", "rule": CONTRACT_REMOVED, "breaking": True,
        "detail": "in the lock file but no longer in the code: processes still running the old code send it or "
                  "wait for it, and the new code dead-letters those in flight",
    }]
    assert error is not None
