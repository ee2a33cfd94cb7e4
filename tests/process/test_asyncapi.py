"""The AsyncAPI document that ``bus_asyncapi`` writes is valid for the official parser
(npm ``@asyncapi/parser``), on RabbitMQ, on Redis and on the embedded broker: zero
diagnostics of severity error.

The parser is installed once, from the committed lock file (``tests/process/asyncapi/``),
into ``.cache/asyncapi-parser/`` (never committed); a changed lock file installs again.
``scripts/test`` installs Debian's ``nodejs`` and ``npm`` where they are missing.
"""

import hashlib
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VALIDATION = ROOT / "tests" / "process" / "asyncapi"
CACHE = ROOT / ".cache" / "asyncapi-parser"
PASSWORD = "do-not-print-me"

BROKERS = {
    # Quorum queues with a delivery limit, dead-letter and retry queues: every extension.
    "rabbitmq": f"amqp://platform:{PASSWORD}@rabbit-1.internal:5672/platform;"
                f"amqp://platform:{PASSWORD}@rabbit-2.internal:5672/platform",
    "redis": f"redis://:{PASSWORD}@redis.internal:6379/0",
    "embedded": "filesystem://localhost/",
}

pytestmark = pytest.mark.process


@pytest.fixture(scope="session")
def asyncapi_parser() -> Path:
    """The node_modules folder holding the parser, installed by ``npm ci`` on first use."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: scripts/test installs Debian's nodejs and npm")
    lock = (VALIDATION / "package-lock.json").read_bytes()
    folder = CACHE / hashlib.sha256(lock).hexdigest()[:16]
    modules = folder / "node_modules"
    if not (modules / "@asyncapi" / "parser" / "package.json").exists():
        shutil.rmtree(folder, ignore_errors=True)  # a half-made install from an interrupted run
        folder.mkdir(parents=True)
        for name in ("package.json", "package-lock.json"):
            shutil.copy(VALIDATION / name, folder / name)
        installed = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=folder,
                                   capture_output=True, text=True, timeout=600)
        assert installed.returncode == 0, f"npm ci of the AsyncAPI parser failed:\n{installed.stderr}"
    return modules


def _write_document(tmp_path: Path, broker: str, format: str) -> Path:
    output = tmp_path / f"asyncapi-{broker}.{format}"
    written = subprocess.run(
        [sys.executable, "manage.py", "bus_asyncapi", "--format", format, "--output", str(output)],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "BUS_DATA_DIR": str(tmp_path / "data"),
             "CELERY_BROKER_URL": BROKERS[broker]},
    )
    assert written.returncode == 0, written.stderr
    return output


def _diagnostics(parser_modules: Path, *documents: Path) -> list[dict]:
    parsed = subprocess.run(
        ["node", str(VALIDATION / "validate.cjs"), str(parser_modules), *map(str, documents)],
        capture_output=True, text=True, timeout=300,
    )
    assert parsed.returncode == 0, parsed.stderr
    return json.loads(parsed.stdout)


def _errors(diagnostics: list[dict]) -> list[str]:
    return [f"{d['file']}: {d['path']}: {d['message']} ({d['code']})" for d in diagnostics if d["severity"] == "error"]


def test_the_document_on_each_broker_is_valid_for_the_official_parser(asyncapi_parser, tmp_path):
    documents = [_write_document(tmp_path, "rabbitmq", "yaml"), _write_document(tmp_path, "redis", "json"),
                 _write_document(tmp_path, "embedded", "yaml")]

    diagnostics = _diagnostics(asyncapi_parser, *documents)

    assert _errors(diagnostics) == []
    for warning in (d for d in diagnostics if d["severity"] == "warning"):
        warnings.warn(f"AsyncAPI parser: {warning['file']}: {warning['path']}: {warning['message']}", stacklevel=1)
    assert all(PASSWORD not in document.read_text() for document in documents)
    rabbitmq = documents[0].read_text()
    assert "x-queue-type: quorum" in rabbitmq and "host: rabbit-2.internal:5672" in rabbitmq


def test_the_parser_reports_a_broken_document(asyncapi_parser, tmp_path):
    """The check above can fail: a reference to nothing and an exchange type AMQP has not are errors."""
    document = json.loads(_write_document(tmp_path, "rabbitmq", "json").read_text())
    document["channels"]["exchange.commands"]["bindings"]["amqp"]["exchange"]["type"] = "broadcast"
    next(iter(document["operations"].values()))["channel"]["$ref"] = "#/channels/nowhere"
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps(document))

    errors = _errors(_diagnostics(asyncapi_parser, broken))

    assert any("exchange/type" in error for error in errors), errors
    assert any("#/channels/nowhere" in error for error in errors), errors
