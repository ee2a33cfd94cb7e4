"""The alert rules and the dashboard of ``monitoring/``, read for the tests that check them:
``tests/unit/test_monitoring.py`` (the metric names they use) and
``tests/process/test_alert_rules.py`` (``promtool`` on the rules, their unit tests and the
dashboard's queries)."""

import json
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "monitoring" / "prometheus" / "bus-alerts.yml"
RULE_TESTS = ROOT / "monitoring" / "prometheus" / "bus-alerts.test.yml"
DASHBOARD = ROOT / "monitoring" / "grafana" / "bus-dashboard.json"

#: A histogram's series are its name with one of these suffixes.
HISTOGRAM_SUFFIXES = re.compile(r"_(bucket|sum|count)$")


def metric_names(expression: str) -> set[str]:
    """The bus's metrics ``expression`` reads, each histogram by its own name."""
    return {HISTOGRAM_SUFFIXES.sub("", name) for name in re.findall(r"\bbus_[a-z_]+", expression)}


def alert_rules() -> list[dict]:
    """Every alerting rule of ``RULES``, in file order."""
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    """Every panel of the dashboard that queries (rows left out, a collapsed row's panels in)."""
    panels = []
    for panel in dashboard()["panels"]:
        panels.extend(panel.get("panels", []) if panel["type"] == "row" else [panel])
    return panels
