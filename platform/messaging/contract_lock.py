"""The contracts' lock file: the JSON Schema of every contract version ever locked, committed
with the code (``BUS_CONTRACTS_LOCK``).

``check`` compares the code's contracts with it and names each change that would break a
running publisher or consumer without a new version (``messaging.schema_compatibility``
says which schema changes do), and each version bump that consumers of the new code could
not read the previous version through. ``relocked`` records the code's schemas, keeping
every version locked before, so a version's schema is compared with the one it was first
deployed with, however many times it was locked since. ``manage.py bus_contracts`` runs both.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from messaging.contracts import Message
from messaging.schema_compatibility import CONSTRAINT_TIGHTENED, ENUM_VALUE_REMOVED, TYPE_NARROWED, breaking_changes

CONTRACT_REMOVED = "contract removed"
NOT_LOCKED = "not locked"
KIND_CHANGED = "kind changed"
OWNER_CHANGED = "owner changed"
VERSION_LOWERED = "version lowered"
NO_UPCASTER = "no upcaster"
CONSUMERS_FIRST = "consumers first"

#: What the lock file says about itself, for whoever opens it.
LOCK_COMMENT = ("The JSON Schema of every contract version, written by `python manage.py bus_contracts lock` "
                "and compared with the code by `python manage.py bus_contracts check`. Commit it; do not edit it.")


class ContractLockError(Exception):
    """The lock file is missing or is not one."""


class LockedContract(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: Literal["command", "event"]
    #: The context that owns the contract.
    context: str
    #: The schema of each version locked, by version.
    versions: dict[Annotated[int, Field(ge=1)], dict[str, Any]]


class ContractLock(BaseModel):
    """The lock file's content."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    comment: str = Field(default=LOCK_COMMENT, alias="$comment")
    #: The layout of the file; a later layout gets a new number.
    format: Literal[1] = 1
    #: Every contract locked, by message type.
    contracts: dict[str, LockedContract] = {}


@dataclasses.dataclass(frozen=True)
class Finding:
    """One difference between the code's contracts and the lock file."""

    message_type: str
    #: The contract version concerned; None for the contract as a whole.
    version: int | None
    #: The field path inside the version's data (``lines[].quantity``); empty for the whole.
    path: str
    #: The rule: a ``messaging.schema_compatibility`` rule or one of the constants above.
    rule: str
    detail: str
    #: False for what ``lock`` records without ``--force``: something not locked yet, or a
    #: change that breaks nothing.
    breaking: bool = True

    def __str__(self) -> str:
        where = self.message_type if self.version is None else f"{self.message_type} v{self.version}"
        if self.path:
            where = f"{where}: {self.path}"
        return f"{where}: {self.rule}: {self.detail}"


def read_lock(path: Path) -> ContractLock:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ContractLockError(f"no contracts lock file at {path}: run `python manage.py bus_contracts lock` "
                                "and commit it") from None
    try:
        return ContractLock.model_validate_json(text)
    except pydantic.ValidationError as error:
        raise ContractLockError(f"{path} is not a contracts lock file: {error}") from None


def write_lock(path: Path, lock: ContractLock) -> None:
    """Write ``lock`` deterministically (sorted keys, two-space indents, a final newline), so that
    the same contracts give the same bytes and a change reviews as a small diff."""
    text = json.dumps(lock.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True, ensure_ascii=False)
    # Write beside it and rename: an interrupted write never leaves half a lock file.
    partial = path.with_name(f".{path.name}.partial")
    partial.write_text(text + "\n", encoding="utf-8")
    os.replace(partial, path)


def contract_schema(contract: type[Message]) -> dict[str, Any]:
    """The JSON Schema of the version ``contract``'s code writes, as the lock file holds it:
    through JSON, so that it compares equal to the same schema read back from the file."""
    return json.loads(json.dumps(contract.model_json_schema()))


def check(lock: ContractLock, contracts: Iterable[type[Message]]) -> list[Finding]:
    """Every difference between ``contracts`` and ``lock``, the contracts in type order."""
    in_code = {contract.type_name(): contract for contract in contracts}
    findings = [
        Finding(message_type, None, "", CONTRACT_REMOVED,
                "in the lock file but no longer in the code: processes still running the old code send "
                "it or wait for it, and the new code dead-letters those in flight")
        for message_type in sorted(lock.contracts.keys() - in_code.keys())
    ]
    for message_type, contract in sorted(in_code.items()):
        findings.extend(_contract_findings(contract, lock.contracts.get(message_type)))
    return findings


def relocked(lock: ContractLock, contracts: Iterable[type[Message]]) -> ContractLock:
    """``lock`` with the code's contracts recorded: each one's current version (added or replaced),
    its older versions kept as they were locked, and the contracts the code no longer has left out.

    It records breaking changes too, so that ``check`` passes on the result: refusing them is the
    caller's part (``bus_contracts lock`` does, unless ``--force``). So the versions above the
    code's are left out, and so are those the code no longer reads when it cannot read the one
    locked before its own.
    """
    recorded = {}
    for contract in contracts:
        locked = lock.contracts.get(contract.type_name())
        versions = {version: schema for version, schema in (locked.versions if locked else {}).items()
                    if version < contract.version}
        if _previous_version(versions, contract) is not None and not _reads_previous_version(versions, contract):
            versions = {version: schema for version, schema in versions.items()
                        if version >= contract.oldest_readable_version()}
        versions[contract.version] = contract_schema(contract)
        recorded[contract.type_name()] = LockedContract(kind=contract.kind, context=contract.context(),
                                                        versions=versions)
    return ContractLock(contracts=recorded)


def _contract_findings(contract: type[Message], locked: LockedContract | None) -> list[Finding]:
    message_type, version = contract.type_name(), contract.version
    if locked is None:
        return [Finding(message_type, version, "", NOT_LOCKED,
                        "a new contract: run `python manage.py bus_contracts lock`", breaking=False)]
    findings = []
    if contract.kind != locked.kind:
        findings.append(Finding(message_type, None, "", KIND_CHANGED,
                                f"locked as {locked.kind}, now {contract.kind}: it travels another way, "
                                "to another queue"))
    if contract.context() != locked.context:
        findings.append(Finding(message_type, None, "", OWNER_CHANGED,
                                f"locked as owned by {locked.context}, now by {contract.context()}"))
    newest_locked = max(locked.versions)
    if version < newest_locked:
        findings.append(Finding(message_type, version, "", VERSION_LOWERED,
                                f"version {newest_locked} is locked: consumers of this code would refuse "
                                f"its messages still in flight"))
    schema = contract_schema(contract)
    if version in locked.versions:
        changes = breaking_changes(locked.versions[version], schema)
        findings.extend(Finding(message_type, version, change.path, change.rule, change.detail) for change in changes)
        if not changes and schema != locked.versions[version]:
            findings.append(Finding(message_type, version, "", NOT_LOCKED,
                                    "changed compatibly since it was locked: run `python manage.py bus_contracts "
                                    "lock`", breaking=False))
            findings.extend(_widenings(message_type, version, locked.versions[version], schema))
    else:
        findings.append(Finding(message_type, version, "", NOT_LOCKED,
                                "a new version: run `python manage.py bus_contracts lock`", breaking=False))
    previous = _previous_version(locked.versions, contract)
    if previous is not None and not _reads_previous_version(locked.versions, contract):
        missing = contract.oldest_readable_version() - 1
        findings.append(Finding(message_type, version, "", NO_UPCASTER,
                                f"consumers of the new code could not read messages of version {previous} still "
                                f"in flight: register `@{contract.__name__}.upcaster(from_version={missing})`"))
    return findings


def _widenings(message_type: str, version: int, locked: dict[str, Any], schema: dict[str, Any]) -> list[Finding]:
    """Where the code's schema accepts values the locked one refuses (a constraint loosened, an
    enum value added, integer widened to number): read backwards, the comparison's narrowings.

    Not breaking for the new code, which reads everything the old wrote; but a consumer still
    running the old code refuses such a value when a new publisher writes one, and a refusal
    at the consumer is a dead letter. A field added is not among them: consumers ignore
    fields they do not know.
    """
    value_rules = {TYPE_NARROWED, CONSTRAINT_TIGHTENED, ENUM_VALUE_REMOVED}
    return [
        Finding(message_type, version, change.path, CONSUMERS_FIRST,
                f"the code before accepts less here ({change.detail}, reading from this code to it): deploy "
                "every consumer before any publisher writes such a value, or make it a new version",
                breaking=False)
        for change in breaking_changes(schema, locked) if change.rule in value_rules
    ]


def _previous_version(versions: Iterable[int], contract: type[Message]) -> int | None:
    """The newest version locked before the one the code writes."""
    return max((version for version in versions if version < contract.version), default=None)


def _reads_previous_version(versions: Iterable[int], contract: type[Message]) -> bool:
    return contract.oldest_readable_version() <= _previous_version(versions, contract)
