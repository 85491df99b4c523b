"""Prometheus: the scrape config and alert rules pass promtool, and the rules' unit tests pass."""

from __future__ import annotations

import subprocess

import yaml

from .support import (
    PENDING_METRICS,
    PROMETHEUS_DIR,
    PROMETHEUS_SERIES,
    RULES_FILE,
    RULES_TEST_FILE,
    SERVICES,
    TARGET_LABELS,
    alert_rules,
    all_queries,
    declared_metrics,
    grouping_labels,
    matcher_labels,
    metric_names,
    prometheus_tool,
)

EXPECTED_ALERTS = {
    "CryptoflowServiceDown",
    "CryptoflowStageStalled",
    "CryptoflowConsumerLagHigh",
    "CryptoflowRedeliveries",
    "CryptoflowDeadLettersGrowing",
    "CryptoflowProcessingFailures",
    "CryptoflowExchangeCircuitOpen",
    "CryptoflowExchangeErrors",
    "CryptoflowStreamSilent",
    "CryptoflowStreamBookResyncs",
}
# Alerts the rules' unit tests see both firing and silent.
UNIT_TESTED_ALERTS = (
    "CryptoflowDeadLettersGrowing",
    "CryptoflowStageStalled",
    "CryptoflowStreamSilent",
    "CryptoflowStreamBookResyncs",
)


def promtool(*args: str) -> str:
    result = subprocess.run(
        [prometheus_tool("promtool"), *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=120
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_promtool_check_config() -> None:
    output = promtool("check", "config", "prometheus.yml")
    assert "SUCCESS" in output


def test_promtool_check_rules() -> None:
    output = promtool("check", "rules", str(RULES_FILE.relative_to(PROMETHEUS_DIR)))
    assert f"SUCCESS: {len(EXPECTED_ALERTS)} rules found" in output


def test_promtool_test_rules() -> None:
    output = promtool("test", "rules", str(RULES_TEST_FILE.relative_to(PROMETHEUS_DIR)))
    assert "SUCCESS" in output


def test_rule_unit_tests_cover_the_dead_letter_stalled_and_stream_alerts() -> None:
    tests = yaml.safe_load(RULES_TEST_FILE.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    assert set(UNIT_TESTED_ALERTS) <= tested
    # Each of them is seen both firing and silent.
    for alert in UNIT_TESTED_ALERTS:
        cases = [c for t in tests for c in t["alert_rule_test"] if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in cases) and any(not c["exp_alerts"] for c in cases), alert


def test_every_alert_is_labelled_and_explained() -> None:
    rules = alert_rules()
    assert {rule["alert"] for rule in rules} == EXPECTED_ALERTS
    for rule in rules:
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_queried_metrics_and_their_labels_are_declared_by_the_stages() -> None:
    # Without running anything: every metric a dashboard or rule selects is declared by a stage's
    # process (or is Prometheus' own, or pending), and the labels the query groups, joins or matches
    # on are that metric's. test_live_metrics.py checks the same against real /metrics pages, but
    # labels only where its run left samples: stream jobs' metrics, for one, get none there.
    declared = declared_metrics()
    problems = []
    for where, expr in all_queries():
        names = metric_names(expr) - PROMETHEUS_SERIES
        undeclared = names - declared.keys()
        problems += [f"{where}: {name} (no stage declares it)" for name in sorted(undeclared - set(PENDING_METRICS))]
        known = [declared[name] for name in names if name in declared]
        if not known or undeclared:
            continue
        available = set().union(*known) | TARGET_LABELS
        problems += [f"{where}: by/on label {label!r}" for label in sorted(grouping_labels(expr) - available)]
        for name, labels in matcher_labels(expr).items():
            if name in declared:
                problems += [f"{where}: {name}{{{label}}}" for label in sorted(labels - declared[name] - TARGET_LABELS)]
    assert not problems, "metrics or labels the stages do not declare:\n" + "\n".join(problems)


def test_pending_metrics_are_the_ones_the_rules_name_in_their_header() -> None:
    # The rules file lists what the services still have to export; keep it in step with support.py.
    header = RULES_FILE.read_text().split("groups:")[0]
    used = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
    for name in PENDING_METRICS:
        assert name in header, f"{name} is pending but not listed in the rules file header"
        assert name in used, f"{name} is listed as pending but no rule uses it"


def test_scrape_config_targets_the_four_services_with_their_component_label() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "cryptoflow")
    # Every replica of each service, by DNS (A records); `component` is the name it was found by.
    (group,) = job["dns_sd_configs"]
    assert (group["type"], group["port"], sorted(group["names"])) == ("A", 8000, sorted(SERVICES))
    assert job["relabel_configs"] == [{"source_labels": ["__meta_dns_name"], "target_label": "component"}]
    assert job.get("metrics_path", "/metrics") == "/metrics"
