"""The alert rules and the Grafana dashboard in ``monitoring/`` use only the metrics the bus
exports, so renaming a metric breaks a test here rather than an alert that never fires; the
rules' unit tests make every alert fire and stay quiet. ``promtool`` checks them in
``tests/process/test_alert_rules.py``."""

import yaml

from tests.monitoring import RULE_TESTS, alert_rules, dashboard, dashboard_panels, metric_names

#: The metrics the bus exports (issue 20), histograms by their own name.
BUS_METRICS = {
    "bus_outbox_due_messages",
    "bus_outbox_oldest_due_age_seconds",
    "bus_published_messages_total",
    "bus_relay_batch_size",
    "bus_relay_confirm_wait_seconds",
    "bus_deliveries_total",
    "bus_handler_duration_seconds",
    "bus_dead_letters_open",
    "bus_workers_alive",
    "bus_relays_alive",
    "bus_queue_messages",
}


def test_metric_names_reads_a_histogram_by_its_own_name():
    expression = ('histogram_quantile(0.99, sum by (le) (rate(bus_handler_duration_seconds_bucket[5m])))'
                  ' / on() sum(bus_outbox_due_messages{job=~"bus-.*"})')

    assert metric_names(expression) == {"bus_handler_duration_seconds", "bus_outbox_due_messages"}


def test_the_alert_rules_read_only_metrics_the_bus_exports():
    used = {rule["alert"]: metric_names(rule["expr"]) for rule in alert_rules()}

    assert {alert for alert, names in used.items() if not names} == {"BusScrapeFailing"}  # reads `up` alone
    assert {alert: names - BUS_METRICS for alert, names in used.items() if names - BUS_METRICS} == {}


def test_every_alert_has_a_severity_a_summary_and_a_description():
    for rule in alert_rules():
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_alert_is_made_to_fire_and_shown_quiet_by_the_rules_unit_tests():
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}

    alerts = {rule["alert"] for rule in alert_rules()}
    assert alerts - fired == set(), "alerts never made to fire in bus-alerts.test.yml"
    assert alerts - quiet == set(), "alerts never shown quiet in bus-alerts.test.yml"


def test_the_dashboard_reads_only_metrics_the_bus_exports_and_shows_each_of_them():
    used = {panel["title"]: set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
            for panel in dashboard_panels()}

    assert all(used.values()), [title for title, names in used.items() if not names]
    assert {title: names - BUS_METRICS for title, names in used.items() if names - BUS_METRICS} == {}
    assert BUS_METRICS - set().union(*used.values()) == set(), "metrics the dashboard does not show"


def test_every_dashboard_query_uses_the_chosen_data_source():
    variables = {variable["name"]: variable for variable in dashboard()["templating"]["list"]}

    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["context"]["query"] == "label_values(bus_deliveries_total, context)"
    for panel in dashboard_panels():
        for source in [panel["datasource"], *(target["datasource"] for target in panel["targets"])]:
            assert source == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
