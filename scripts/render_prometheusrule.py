"""Wrap deploy/prometheus/synthguard.rules.yml in a prometheus-operator PrometheusRule.

The rule file stays the single source (promtool checks and tests it); this writes
deploy/prometheus/prometheusrule.yaml with the same groups. A contract test fails
when the two drift: run ``python scripts/render_prometheusrule.py`` after editing.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
RULES = DEPLOY / "synthguard.rules.yml"
OUT = DEPLOY / "prometheusrule.yaml"
HEADER = (
    "# GENERATED from synthguard.rules.yml by scripts/render_prometheusrule.py;"
    " edit the rule file, then re-run the script.\n"
)


def render(rules_path: Path = RULES) -> dict[str, Any]:
    """The PrometheusRule object for the groups in `rules_path`."""
    groups = yaml.safe_load(rules_path.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "synthguard",
            "labels": {
                "app.kubernetes.io/name": "synthguard",
                "app.kubernetes.io/component": "alerting",
            },
        },
        "spec": {"groups": groups},
    }


def main() -> int:
    """Write `OUT`; returns the exit code."""
    text = yaml.safe_dump(render(), sort_keys=False, width=100)
    OUT.write_text(HEADER + text)
    sys.stdout.write(f"wrote {OUT}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
