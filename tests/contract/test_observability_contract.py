"""Every worker metric the dashboards and alert rules read is exported by the running
service: start the REAL worker (``python -m stream.worker_main``, the container's
entry point) against the REAL Tansu broker, read its ``/metrics`` over HTTP and
compare. The feedback learner's (``LEARNER_METRIC_*``, scraped from the learner's own
pod) must be exposed by its registry, `stream.learner.LearnerMetrics`, and never by
the worker. Triton's names are checked against a real tritonserver in
``tests/e2e/test_prometheus_scrape.py``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest
from observability import (
    ALLOWED_OUTSIDE_WORKER,
    all_named_metrics,
    learner_named_metrics,
    learner_samples,
    sample_names,
)
from prometheus_client.parser import text_string_to_metric_families

from serving.local_process import free_port
from stream.dev.broker import TansuBroker

ROOT: Final = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def worker_metrics_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    logs = tmp_path_factory.mktemp("worker")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHGUARD_")}
    with TansuBroker() as broker:
        env.update(
            PYTHONPATH=str(ROOT),
            SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS=broker.bootstrap,
            # nothing listens there: the worker serves /metrics while it waits
            SYNTHGUARD_TRITON__URL=f"127.0.0.1:{free_port()}",
            SYNTHGUARD_TRITON__TIMEOUT_S="2",
            SYNTHGUARD_METRICS__PORT="0",
        )
        with (logs / "out").open("wb") as out, (logs / "err").open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stream.worker_main"],
                env=env, stdout=out, stderr=err, cwd=ROOT,
            )  # fmt: skip
        try:
            yield _announced(proc, logs)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def _announced(proc: subprocess.Popen[bytes], logs: Path) -> str:
    for _ in range(600):
        for line in (logs / "out").read_text().splitlines():
            if line.startswith("{"):
                return str(json.loads(line)["metrics"])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError((logs / "err").read_text()[-3000:])


def exported(url: str) -> set[str]:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    return sample_names(text_string_to_metric_families(text))


def test_every_dashboard_and_rule_metric_is_exported(worker_metrics_url: str) -> None:
    names = exported(worker_metrics_url)
    missing = {
        name: sorted(where)
        for name, where in all_named_metrics().items()
        if name not in ALLOWED_OUTSIDE_WORKER and name not in names
    }
    assert not missing, f"read by dashboards/rules, absent from /metrics: {missing}"


def test_every_learner_metric_named_is_exported_by_the_learner() -> None:
    exported_by_learner = learner_samples()
    missing = {
        name: sorted(where)
        for name, where in learner_named_metrics().items()
        if name not in exported_by_learner
    }
    assert not missing, f"read by dashboards/rules, not in LearnerMetrics: {missing}"


def test_learner_metrics_are_not_the_workers(worker_metrics_url: str) -> None:
    served = exported(worker_metrics_url)
    assert learner_samples()
    assert not learner_samples() & served


def test_readiness_gauge_reports_the_missing_detector(worker_metrics_url: str) -> None:
    with urllib.request.urlopen(worker_metrics_url, timeout=10) as resp:  # noqa: S310
        text = resp.read().decode()
    assert "synthguard_ready 0.0" in text
    ready_url = worker_metrics_url.removesuffix("/metrics") + "/readyz"
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(ready_url, timeout=10)  # noqa: S310
    assert err.value.code == 503
    assert "detector unreachable" in json.loads(err.value.read())["reasons"]
