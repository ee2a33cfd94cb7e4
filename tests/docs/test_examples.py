"""Every shell example in README.md and docs/ keeps working: run here, or run by the test it names, or
not run for a reason it gives. Runs them on the embedded default in a scratch folder, as a reader would."""

import os
import subprocess
import sys
import uuid

import pytest

from tests.docs.examples import NOT_RUN, ROOT, RUN_BY, examples, keys, why_not_runnable

pytestmark = pytest.mark.e2e

#: What placeholders of the examples stand for, in a scratch run.
PLACEHOLDERS = {"ORDER_ID": str(uuid.uuid4())}
#: Seconds one example may take (seed_demo is the slowest, a few seconds).
EXAMPLE_TIMEOUT = 120

EXAMPLES = examples()
UNMARKED = [e for e in EXAMPLES if e.marker is None]


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A folder to run examples in, and the environment of the embedded default in it, migrated."""
    folder = tmp_path_factory.mktemp("examples")
    env = {k: v for k, v in os.environ.items()
           if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE") and not k.startswith("BUS_")}
    env["BUS_DATA_DIR"] = str(folder / "var")
    subprocess.run([sys.executable, str(ROOT / "manage.py"), "migrate", "-v0"], cwd=folder, env=env,
                   check=True, timeout=EXAMPLE_TIMEOUT)
    return folder, env


def test_the_docs_have_examples():
    # Given the README and the site, then the collector finds their examples (a broken pattern finds none).
    assert len(EXAMPLES) >= 20, [e.name for e in EXAMPLES]
    assert any(e.path.name == "README.md" for e in EXAMPLES)


@pytest.mark.parametrize("example", [e for e in EXAMPLES if e.marker is not None], ids=lambda e: e.name)
def test_a_marked_example_names_its_test_or_its_reason(example):
    run_by, not_run = RUN_BY.match(example.marker), NOT_RUN.match(example.marker)
    assert run_by or not_run, (
        f"{example.name}: the marker must read 'run by <path>' or 'not run (<reason>)', not {example.marker!r}")
    if run_by:
        test = ROOT / run_by["path"]
        assert test.is_file(), f"{example.name}: {run_by['path']} does not exist"
        # It mentions what the example runs: its manage.py subcommand (run_platform), else its program.
        mentioned = {key for key in keys(example) if key in test.read_text()}
        assert mentioned, f"{example.name}: {run_by['path']} never mentions any of {sorted(keys(example))}"


@pytest.mark.parametrize("example", UNMARKED, ids=lambda e: e.name)
def test_an_unmarked_example_runs(example, scratch):
    # Given an example nobody said is run elsewhere, then it is one this test can run
    reason = why_not_runnable(example)
    assert reason is None, (
        f"{example.name}: {reason}. Make it runnable here, or mark it just before the block with "
        "<!-- example: run by <test file> --> or <!-- example: not run (<reason>) -->")
    if "scripts/test --help" in example.body and "--help" not in (ROOT / "scripts" / "test").read_text():
        pytest.fail(f"{example.name}: scripts/test does not answer --help yet (run, it would start the services)")
    folder, env = scratch
    script = example.body
    for placeholder, value in PLACEHOLDERS.items():
        script = script.replace(placeholder, value)
    script = script.replace("python manage.py", f"{sys.executable} {ROOT / 'manage.py'}")
    script = script.replace("scripts/test", str(ROOT / "scripts" / "test"))
    # When it runs as a reader would type it, from a folder of their own
    result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=folder, env=env,
                            capture_output=True, text=True, timeout=EXAMPLE_TIMEOUT)
    # Then it succeeds
    assert result.returncode == 0, f"{example.name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
