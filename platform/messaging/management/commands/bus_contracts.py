"""``manage.py bus_contracts check|lock``: the breaking-change check of the contracts, and their lock file.

``check`` exits 1 naming every change to a locked contract version that would break a
running publisher or consumer without a new version (CI runs it); ``lock`` records the
code's schemas in ``BUS_CONTRACTS_LOCK``, keeping the versions locked before, and refuses
what ``check`` calls breaking unless ``--force``.
"""

import dataclasses
import json
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.template.defaultfilters import pluralize

from messaging.contract_lock import (
    CONSUMERS_FIRST,
    ContractLock,
    ContractLockError,
    check,
    read_lock,
    relocked,
    write_lock,
)
from messaging.registry import registry


class Command(BaseCommand):
    help = ("Check the contracts against their lock file (BUS_CONTRACTS_LOCK) for changes that would break "
            "running publishers or consumers, or lock the code's contract schemas.")

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True, metavar="check|lock")
        check_action = actions.add_parser(
            "check", help="exit 1 naming each breaking change to a locked contract version (or anything not locked)",
            description="Exit 1 naming each breaking change to a locked contract version, or anything not locked.")
        check_action.add_argument("--format", choices=["text", "json"], default="text",
                                  help="one line per finding (the default), or a JSON list of findings")
        lock_action = actions.add_parser(
            "lock", help="write the code's contract schemas to the lock file, keeping the versions locked before",
            description="Write the code's contract schemas to the lock file, keeping the versions locked before.")
        lock_action.add_argument("--force", action="store_true",
                                 help="lock breaking changes too (nothing of the old schema is still in flight)")

    def handle(self, *args, **options):
        path = Path(settings.BUS_CONTRACTS_LOCK)
        if options["action"] == "check":
            return self._check(path, options["format"])
        return self._lock(path, force=options["force"])

    def _check(self, path, output_format):
        try:
            lock = read_lock(path)
        except ContractLockError as error:
            raise CommandError(str(error)) from None
        findings = check(lock, registry.contracts)
        if output_format == "json":
            self.stdout.write(json.dumps([dataclasses.asdict(finding) for finding in findings], indent=2))
        else:
            for finding in findings:
                self.stdout.write(str(finding))
        breaking = sum(finding.breaking for finding in findings)
        not_locked = len(findings) - breaking
        if breaking:
            raise CommandError(
                f"{breaking} breaking change{pluralize(breaking)} against {path}: change a contract incompatibly "
                "only in a new version, with an upcaster from the one before"
                + (f"; {not_locked} more not locked (`bus_contracts lock` records them)" if not_locked else ""))
        if not_locked:
            raise CommandError(f"{not_locked} change{pluralize(not_locked)} not locked in {path}: run "
                               "`python manage.py bus_contracts lock` and commit the file")
        if output_format == "text":
            versions = sum(len(locked.versions) for locked in lock.contracts.values())
            self.stdout.write(f"{len(registry.contracts)} contracts match {path} ({versions} versions locked): "
                              "no breaking change")

    def _lock(self, path, *, force):
        try:
            lock = read_lock(path)
        except ContractLockError as error:
            if path.exists():
                raise CommandError(f"{error}\nMove it away or repair it first: locking rewrites it") from None
            lock = ContractLock()
        findings = check(lock, registry.contracts)
        breaking = [finding for finding in findings if finding.breaking]
        # What the deploy must take care of, breaking or not (a widening needs the consumers first).
        for finding in findings:
            if finding.breaking or finding.rule == CONSUMERS_FIRST:
                self.stdout.write(str(finding))
        if breaking and not force:
            raise CommandError(f"refused: {len(breaking)} breaking change{pluralize(len(breaking))} to what {path} "
                               "locked. Make an "
                               "incompatible change in a new version (`version = N + 1` and an upcaster from N); "
                               "--force locks it anyway, when nothing of the old schema is still in flight")
        new_lock = relocked(lock, registry.contracts)
        for line in _differences(lock, new_lock):
            self.stdout.write(line)
        if new_lock == lock:
            self.stdout.write(f"{path} is up to date")
            return
        write_lock(path, new_lock)
        self.stdout.write(f"locked {len(new_lock.contracts)} contracts in {path}")


def _differences(old: ContractLock, new: ContractLock) -> list[str]:
    """What locking changes, one line per contract version: for the operator to read before committing."""
    lines = []
    for message_type in sorted(old.contracts.keys() | new.contracts.keys()):
        old_versions = old.contracts[message_type].versions if message_type in old.contracts else {}
        new_versions = new.contracts[message_type].versions if message_type in new.contracts else {}
        for version in sorted(old_versions.keys() | new_versions.keys()):
            if version not in old_versions:
                lines.append(f"added {message_type} v{version}")
            elif version not in new_versions:
                lines.append(f"dropped {message_type} v{version}")
            elif old_versions[version] != new_versions[version]:
                lines.append(f"updated {message_type} v{version}")
    return lines
