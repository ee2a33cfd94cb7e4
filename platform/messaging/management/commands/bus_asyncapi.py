"""``manage.py bus_asyncapi``: the platform's AsyncAPI 3.0 document (``messaging.asyncapi``),
for teams that read or send its messages from another language, and for their tools."""

import json
from pathlib import Path

import yaml
from django.core.management.base import BaseCommand, CommandError

from messaging import asyncapi


class Command(BaseCommand):
    help = ("Write the AsyncAPI 3.0 document of every contract, exchange, queue and handler, for the broker "
            "of CELERY_BROKER_URL (its hosts, never its credentials).")

    def add_arguments(self, parser):
        parser.add_argument("--format", choices=["yaml", "json"], default="yaml", help="YAML (the default) or JSON")
        parser.add_argument("--output", metavar="FILE", help="write to FILE instead of standard output")

    def handle(self, *args, **options):
        document = asyncapi.document()
        if options["format"] == "json":
            text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
        else:
            # In the document's order (asyncapi, info, servers, ...), as people read it.
            text = yaml.dump(document, Dumper=_ReadableDumper, sort_keys=False, allow_unicode=True, width=100)
        if options["output"] is None:
            self.stdout.write(text, ending="")
            return
        output = Path(options["output"])
        try:
            output.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"--output {output}: cannot write it: {exc.strerror}") from None
        self.stderr.write(f"wrote the AsyncAPI {asyncapi.ASYNCAPI_VERSION} document to {output}")


class _ReadableDumper(yaml.SafeDumper):
    """Writes text of several lines as a block (``|``), as written, not as one escaped line."""


def _text(dumper: yaml.SafeDumper, value: str):
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)


_ReadableDumper.add_representer(str, _text)
