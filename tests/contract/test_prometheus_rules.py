"""deploy/prometheus: the rule file passes ``promtool check rules`` and the alert unit
tests (``promtool test rules``); its PrometheusRule twin is in sync; every metric it
reads is exported by the worker, the feedback learner or Triton."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest
import yaml
from observability import (
    ALLOWED_OUTSIDE_WORKER,
    LEARNER_FAMILIES,
    ROOT,
    RULES_FILE,
    WORKER_FAMILIES,
    family,
    learner_samples,
    rule_exprs,
    rule_metrics,
)
from promql_names import metric_names

RULE_TESTS: Final = (
    ROOT / "deploy" / "prometheus" / "tests" / "synthguard.rules.test.yml"
)
PROMETHEUS_RULE: Final = ROOT / "deploy" / "prometheus" / "prometheusrule.yaml"
REQUIRED_ALERTS: Final = {
    "SynthGuardConsumerLagGrowing",
    "SynthGuardDeadLetterRateHigh",
    "SynthGuardDetectorFailing",
    "SynthGuardTritonRequestFailures",
    "SynthGuardTritonQueueTimeHigh",
    "SynthGuardEndToEndLatencyHigh",
    "SynthGuardNoVerdicts",
    "SynthGuardWorkerNotReady",
    "SynthGuardFeedbackRejected",
}


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool missing: `make setup` installs Debian's prometheus package"
    return path


def test_promtool_check_rules() -> None:
    out = subprocess.run(
        [promtool(), "check", "rules", str(RULES_FILE)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_alert_unit_tests() -> None:
    out = subprocess.run(
        [promtool(), "test", "rules", str(RULE_TESTS)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_required_alert_exists_and_is_unit_tested() -> None:
    alerts = {
        name for name, _expr in rule_exprs() if not name.startswith("synthguard:")
    }
    assert alerts >= REQUIRED_ALERTS
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert tested == alerts, f"alerts never shown firing: {alerts - tested}"


def test_every_rule_parses_and_reads_known_metrics() -> None:
    for name, expr in rule_exprs():
        assert metric_names(expr), name
    unknown = {
        name: sorted(rules)
        for name, rules in rule_metrics().items()
        if name not in ALLOWED_OUTSIDE_WORKER
        and family(name) not in WORKER_FAMILIES | LEARNER_FAMILIES
    }
    assert not unknown, f"metrics neither in stream.names nor Triton's: {unknown}"


def test_learner_metrics_in_rules_are_exported_by_the_learner() -> None:
    exported = learner_samples()
    wrong = {
        name: sorted(rules)
        for name, rules in rule_metrics().items()
        if family(name) in LEARNER_FAMILIES and name not in exported
    }
    assert not wrong, f"not exposed by LearnerMetrics: {wrong}"


def test_prometheusrule_matches_the_rule_file() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from render_prometheusrule import render
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    committed = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert committed == render(RULES_FILE), (
        "deploy/prometheus/prometheusrule.yaml is stale: "
        "run python scripts/render_prometheusrule.py"
    )


@pytest.mark.parametrize("broken", ["rate(synthguard_verdicts_total[5m]", "sum by ("])
def test_promtool_rejects_a_broken_rule(tmp_path: Path, broken: str) -> None:
    bad = tmp_path / "bad.rules.yml"
    bad.write_text(
        yaml.safe_dump(
            {"groups": [{"name": "g", "rules": [{"alert": "A", "expr": broken}]}]}
        )
    )
    out = subprocess.run(
        [promtool(), "check", "rules", str(bad)], capture_output=True, check=False
    )
    assert out.returncode != 0
