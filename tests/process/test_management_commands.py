"""publish_event, send_command and bus_contracts from the shell, as scripts and CI call them: the
exit code, one line on stderr, the message id alone on stdout."""

import json
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.process


def test_publish_event_with_invalid_data_exits_non_zero_from_the_shell(tmp_path):
    result = _manage_in_shell("publish_event", "catalog.ProductPriceChanged", "--data", '{"sku": ""}',
                              env={"BUS_DATA_DIR": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode != 0
    assert "Invalid data for catalog.ProductPriceChanged" in result.stderr
    assert "new_price" in result.stderr


def test_bad_input_from_the_shell_is_one_line_on_stderr_and_a_non_zero_exit(tmp_path):
    result = _manage_in_shell(
        "send_command", "catalog.ReleaseStock", "--data", "[" * 5000 + "]" * 5000, env={"BUS_DATA_DIR": str(tmp_path)},
    )

    assert result.returncode == 1
    assert result.stderr.strip() == "CommandError: --data is nested too deeply to read"


def test_a_database_that_is_down_is_one_line_naming_its_host_but_never_its_password(tmp_path):
    password = "do-not-print-me"
    closed_port = _a_closed_port()

    result = _manage_in_shell(
        "send_command", "catalog.ReleaseStock", "--data", json.dumps({"order_id": str(uuid.uuid4())}),
        env={"DATABASE_URL": f"postgres://shop:{password}@127.0.0.1:{closed_port}/shop", "HOME": str(tmp_path)},
    )

    assert result.returncode == 1
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith(f"CommandError: cannot use the database shop on 127.0.0.1:{closed_port}: ")
    assert result.stderr.rstrip().endswith("nothing was written")
    assert password not in result.stderr + result.stdout


def test_from_the_shell_stdout_is_the_message_id_alone_and_a_missing_file_is_one_line(tmp_path):
    env = {"BUS_DATA_DIR": str(tmp_path)}
    _manage_in_shell("migrate", "-v0", env=env)

    sent = _manage_in_shell("send_command", "catalog.ReleaseStock", "--data", "-", env=env,
                            input=json.dumps({"order_id": str(uuid.uuid4())}))
    missing = _manage_in_shell("send_command", "catalog.ReleaseStock", "--data", "@nowhere.json", env=env)

    assert sent.returncode == 0, sent.stderr
    assert uuid.UUID(sent.stdout.strip()) and "in the name of 'operator'" in sent.stderr
    assert missing.returncode == 1
    assert missing.stderr == "CommandError: --data @nowhere.json: cannot read nowhere.json: No such file or directory\n"


def test_bus_contracts_check_exits_0_on_the_committed_lock_file_and_1_without_one(tmp_path):
    committed = _manage_in_shell("bus_contracts", "check", env={"BUS_DATA_DIR": str(tmp_path)})
    missing = _manage_in_shell("bus_contracts", "check", env={"BUS_DATA_DIR": str(tmp_path),
                                                              "BUS_CONTRACTS_LOCK": str(tmp_path / "none.json")})

    assert committed.returncode == 0, committed.stdout + committed.stderr
    assert committed.stdout.rstrip().endswith("no breaking change")
    assert missing.returncode == 1
    assert missing.stderr.startswith(f"CommandError: no contracts lock file at {tmp_path / 'none.json'}: ")


def _manage_in_shell(*args: str, env: dict, input: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", **env}, input=input,
    )


def _a_closed_port() -> int:
    """A local TCP port nothing listens on: bound once to find it free, then released."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
