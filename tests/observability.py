"""What the dashboards and the Prometheus rules read, and who exports it.

Shared by the dashboard, rule and metrics-contract tests: the metric names named in
``deploy/grafana/dashboards/*.json`` and ``deploy/prometheus/synthguard.rules.yml``,
the worker's families (`stream.names` ``METRIC_*``), the feedback learner's
(``LEARNER_METRIC_*``, scraped from the learner's own pod), and the Triton Inference
Server 2.51 names.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Final

import yaml
from prometheus_client import CollectorRegistry, Metric
from promql_names import dashboard_exprs, metric_names, substitute

from stream import names
from stream.learner import LearnerMetrics

ROOT: Final = Path(__file__).resolve().parents[1]
DASHBOARD_DIR: Final = ROOT / "deploy" / "grafana" / "dashboards"
RULES_FILE: Final = ROOT / "deploy" / "prometheus" / "synthguard.rules.yml"

TRITON_METRICS: Final = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_inference_pending_request_count",
    }
)
# exported by Triton only where it sees a GPU (absent on the CPU build machines)
GPU_ONLY: Final = frozenset(
    {"nv_gpu_utilization", "nv_gpu_memory_used_bytes", "nv_gpu_memory_total_bytes"}
)
PROMETHEUS_METRICS: Final = frozenset({"up"})
WORKER_FAMILIES: Final = frozenset(
    value
    for key, value in vars(names).items()
    if key.startswith("METRIC_") and isinstance(value, str)
)
# the feedback learner's (``synthguard learner``, its own pod and PodMonitor)
LEARNER_FAMILIES: Final = frozenset(
    value
    for key, value in vars(names).items()
    if key.startswith("LEARNER_METRIC_") and isinstance(value, str)
)
FAMILY_SUFFIXES: Final = ("_bucket", "_sum", "_count", "_info")  # histogram, Info
ALLOWED_OUTSIDE_WORKER: Final = TRITON_METRICS | GPU_ONLY | PROMETHEUS_METRICS


# the sample names a family of each type exposes, labelled or not
SAMPLE_SUFFIXES: Final = {
    "counter": ("_total",),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count"),
    "info": ("_info",),
}


def sample_names(families: Iterable[Metric]) -> set[str]:
    """Sample names of metric families (a registry's, or parsed from /metrics)."""
    return {
        family.name + suffix
        for family in families
        for suffix in SAMPLE_SUFFIXES[family.type]
    }


def learner_samples() -> set[str]:
    """Sample names the feedback learner's registry (`LearnerMetrics`) exposes."""
    return sample_names(LearnerMetrics(CollectorRegistry()).registry.collect())


def family(metric: str) -> str:
    """The `stream.names` constant a sample name comes from (itself if none)."""
    for suffix in FAMILY_SUFFIXES:
        base = metric.removesuffix(suffix)
        if base != metric and base in WORKER_FAMILIES | LEARNER_FAMILIES:
            return base
    return metric


def rule_exprs(path: Path = RULES_FILE) -> list[tuple[str, str]]:
    """(rule name, expr) for every recording rule and alert in a rule file."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [
        (rule.get("record") or rule["alert"], rule["expr"])
        for group in doc["groups"]
        for rule in group["rules"]
    ]


def recorded_names(path: Path = RULES_FILE) -> set[str]:
    """Series the recording rules produce (``level:metric:operations``)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    return {
        rule["record"]
        for group in doc["groups"]
        for rule in group["rules"]
        if "record" in rule
    }


def dashboard_metrics(path: Path) -> dict[str, set[str]]:
    """Metric name -> titles of the panels (or variables) that read it."""
    used: dict[str, set[str]] = {}
    for title, expr in dashboard_exprs(path):
        for name in metric_names(substitute(expr)):
            used.setdefault(name, set()).add(title)
    return used


def rule_metrics(path: Path = RULES_FILE) -> dict[str, set[str]]:
    """Scraped metric name -> the rules that read it (recorded series left out)."""
    recorded = recorded_names(path)
    used: dict[str, set[str]] = {}
    for rule, expr in rule_exprs(path):
        for name in metric_names(expr) - recorded:
            used.setdefault(name, set()).add(rule)
    return used


def named_metrics() -> dict[str, set[str]]:
    """Every scraped metric the dashboards and rules read -> where it is read."""
    used: dict[str, set[str]] = {}
    sources = [dashboard_metrics(p) for p in sorted(DASHBOARD_DIR.glob("*.json"))]
    for source in [*sources, rule_metrics()]:
        for name, where in source.items():
            used.setdefault(name, set()).update(where)
    return used


def all_named_metrics() -> dict[str, set[str]]:
    """What the dashboards and rules read from the worker and Triton -> where.

    `named_metrics` without the feedback learner's families: a scrape of the
    worker and Triton must serve all of these; the learner's are checked against
    `learner_samples` (`learner_named_metrics`).
    """
    return {
        name: where
        for name, where in named_metrics().items()
        if family(name) not in LEARNER_FAMILIES
    }


def learner_named_metrics() -> dict[str, set[str]]:
    """What the dashboards and rules read from the feedback learner -> where."""
    return {
        name: where
        for name, where in named_metrics().items()
        if family(name) in LEARNER_FAMILIES
    }
