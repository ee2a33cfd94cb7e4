"""The alert rules of ``monitoring/prometheus/`` load in Prometheus, and their unit tests
(``bus-alerts.test.yml``) pass: each alert fires on its fault, with its labels and
annotations, and stays quiet on healthy series. A rule changed without its tests fails them.
The dashboard's queries parse as PromQL too.

``promtool`` comes with Debian's ``prometheus`` package, which ``scripts/test`` installs
where it is missing."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.monitoring import RULE_TESTS, RULES, dashboard_panels

pytestmark = pytest.mark.process

#: One break per alert, each a change the rules' unit tests must catch: (what, into what).
BROKEN_RULES = {
    "BusOutboxBacklogGrowing": ("(bus_outbox_due_messages) > 1000", "(bus_outbox_due_messages) > 3000"),
    "BusOutboxMessagesOld": ("(bus_outbox_oldest_due_age_seconds) > 60", "(bus_outbox_oldest_due_age_seconds) > 1"),
    "BusDeadLettersOpen": ("(bus_dead_letters_open) > 0", "(bus_dead_letters_open) > 5"),
    "BusContextWithoutWorker": ("sum without (instance) (bus_workers_alive)",
                                "min without (instance) (bus_workers_alive)"),
    "BusNoRelayAlive": ("(bus_relays_alive) == 0", "(bus_relays_alive) == 1"),
    "BusLivenessMetricsAbsent": ("absent(bus_relays_alive)", "absent(bus_relay_alive)"),
    "BusScrapeFailing": ('up{job=~"bus-.*"} == 0', "up == 0"),
    "BusHandlerSlow": ("histogram_quantile(0.99,", "histogram_quantile(0.9,"),
    "BusManyRetries": ('outcome="retried"', 'outcome="handled"'),
}

#: What Grafana puts in place of the dashboard's variables before it sends a query.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$context": ".*"}


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: scripts/test installs Debian's prometheus package")
    return path


def _run(promtool: str, *arguments: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *arguments], cwd=cwd, capture_output=True, text=True, timeout=60)


def test_the_alert_rules_load(promtool):
    checked = _run(promtool, "check", "rules", RULES.name, cwd=RULES.parent)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(BROKEN_RULES)} rules found" in checked.stdout, "every alert needs its break in BROKEN_RULES"


def test_every_alert_fires_on_its_fault_and_stays_quiet_when_healthy(promtool):
    tested = _run(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)

    assert tested.returncode == 0, tested.stdout + tested.stderr


@pytest.mark.parametrize("alert", BROKEN_RULES)
def test_a_broken_rule_fails_its_unit_tests(promtool, tmp_path, alert):
    # Given a copy of the rules with one alert's expression changed, beside their unit tests
    before, after = BROKEN_RULES[alert]
    rules = RULES.read_text()
    assert rules.count(before) == 1, f"{before!r} is no longer in {RULES.name}: change BROKEN_RULES"
    (tmp_path / RULES.name).write_text(rules.replace(before, after))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)

    # When promtool runs the unit tests on the copy
    tested = _run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)

    # Then they fail, on that alert
    assert tested.returncode != 0
    assert f"alertname: {alert}," in tested.stdout + tested.stderr


def test_every_dashboard_query_parses_as_promql(promtool, tmp_path):
    # Given each query of the dashboard, its variables filled in as Grafana does, as a recording rule
    pattern = re.compile("|".join(re.escape(variable) for variable in GRAFANA_VARIABLES))
    rules = [{"record": f"dashboard:panel_{panel['id']}_{target['refId']}",
              "expr": pattern.sub(lambda found: GRAFANA_VARIABLES[found.group()], target["expr"])}
             for panel in dashboard_panels() for target in panel["targets"]]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))

    # Then promtool loads them all
    checked = _run(promtool, "check", "rules", "dashboard.yml", cwd=tmp_path)

    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(rules)} rules found" in checked.stdout
