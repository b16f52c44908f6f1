"""A REAL scrape: Debian's Prometheus on loopback scrapes the worker (subprocess, REAL
Tansu broker) and the REAL tritonserver while images flow, loads the shipped rule
file, and answers the dashboards' and alerts' queries over its HTTP API."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from observability import (
    DASHBOARD_DIR,
    GPU_ONLY,
    RULES_FILE,
    all_named_metrics,
    rule_exprs,
)
from prometheus_harness import Prometheus
from promql_names import dashboard_exprs, substitute
from stream_harness import StreamCase, WorkerProcess, file_events, inline_event

from serving.triton.server import TritonServer
from stream.dev.broker import TansuBroker
from stream.dev.testing import truncated_jpeg

# exported only once something happened to create a label child
EVENT_DRIVEN = {"synthguard_detector_failures_total"}
# overview panels that must show data after a run with verdicts and one DLQ record
PANELS_WITH_DATA = {
    "Throughput: consumed vs processed",
    "Verdict mix",
    "End-to-end latency",
    "Stage latency by stage",
    "Batch size",
    "DLQ by error class",
    "Model versions",
}


def _some_images(images_dir: Path, n: int, kind: str = "real") -> list[Path]:
    return sorted(images_dir.glob(f"{kind}_*.jpg"))[:n]


async def _until(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    for _ in range(int(timeout_s / 0.5)):
        if check():
            return
        await asyncio.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("runner", ["aiokafka", "faust"])
async def test_prometheus_scrapes_worker_and_triton_and_evaluates_rules(
    runner: str,
    broker: TansuBroker,
    triton: TritonServer,
    images_dir: Path,
    tmp_path: Path,
) -> None:
    case = StreamCase(broker.bootstrap, triton.grpc_url)
    await case.create_topics()
    good, _ids = file_events(_some_images(images_dir, 6), "scrape-")
    poison = [inline_event("poison-1", truncated_jpeg())]
    # as deployed: static group membership from the pod name (faust ignores it)
    env = case.env(SYNTHGUARD_KAFKA__GROUP_INSTANCE_ID="synthguard-worker-0")
    worker = WorkerProcess(runner, env, tmp_path / "worker")
    try:
        metrics_url = (await worker.endpoints())["metrics"]
        prom = Prometheus(
            {"synthguard-worker": metrics_url, "synthguard-triton": triton.metrics_url},
            [RULES_FILE],
            tmp_path / "prometheus",
        )
        checked = prom.check_config()
        assert checked.returncode == 0, checked.stdout + checked.stderr
        with prom:
            await _until(
                lambda: prom.value('sum(up{job=~"synthguard-.*"})') == 2, 30, "both up"
            )
            await case.produce(good + poison)
            await case.verdicts_read(len(good), 180)
            await case.dlq_read(1, 60)
            # the scrape after the last verdict
            await _until(
                lambda: prom.value("sum(synthguard_verdicts_total)") == len(good),
                30,
                "verdict counters",
            )
            # Triton refreshes its metrics every 2 s: wait for every image encoded
            # and the pipeline model's success, which it counts after the encoder's
            # (a scrape in between saw the encoder at 6 and the pipeline at 0)
            await _until(
                lambda: (
                    prom.value('nv_inference_count{model="clip_image_encoder"}')
                    >= len(good)
                    and prom.value(
                        'nv_inference_request_success{model="synthguard_detector"}'
                    )
                    >= 1
                ),
                30,
                "Triton's encoder and pipeline counts",
            )
            _assert_counters_and_histograms(prom, len(good))
            _assert_every_named_metric_has_series(prom)
            _assert_dashboards_evaluate(prom)
            await _assert_rules_evaluate(prom)
            await _assert_drift_moves_with_fakes(prom, case, images_dir, len(good))
        assert worker.terminate() == 0
    finally:
        worker.ensure_stopped()


def _assert_counters_and_histograms(prom: Prometheus, n_good: int) -> None:
    by_label = {
        s["metric"]["label"]: float(s["value"][1])
        for s in prom.query("sum by (label) (synthguard_verdicts_total)")
    }
    assert sum(by_label.values()) == n_good
    assert set(by_label) <= {"ai_generated", "real", "uncertain"}
    dlq = prom.query("sum by (error_class) (synthguard_dlq_events_total)")
    assert [(s["metric"]["error_class"], s["value"][1]) for s in dlq] == [
        ("truncated", "1")
    ]
    assert prom.value('synthguard_events_processed_total{outcome="verdict"}') == n_good
    assert prom.value("synthguard_end_to_end_seconds_count") == n_good + 1
    p99 = prom.value(
        "histogram_quantile(0.99, sum by (le) (increase(synthguard_end_to_end_seconds_bucket[5m])))"
    )
    assert math.isfinite(p99)
    assert 0 < p99 <= 600
    for stage in ("fetch", "decode", "infer", "publish"):
        count = prom.value(
            f'synthguard_stage_duration_seconds_count{{stage="{stage}"}}'
        )
        assert count > 0, stage
    # the worker's infer calls reached Triton's pipeline model
    assert prom.value('nv_inference_request_success{model="synthguard_detector"}') >= 1
    assert prom.value("synthguard_ready") == 1
    assert prom.value("synthguard_triton_available") == 1
    info = prom.query("synthguard_model_info")
    assert info
    assert info[0]["metric"]["policy"] == "clip_default@1"


def _assert_every_named_metric_has_series(prom: Prometheus) -> None:
    expected = set(all_named_metrics()) - GPU_ONLY - EVENT_DRIVEN
    missing = sorted(
        name for name in expected if not prom.query(f'count({{__name__="{name}"}})')
    )
    assert not missing, f"named by dashboards/rules, never scraped: {missing}"


def _assert_dashboards_evaluate(prom: Prometheus) -> None:
    with_data = set()
    for path in sorted(DASHBOARD_DIR.glob("*.json")):
        for title, expr in dashboard_exprs(path):
            if prom.query(substitute(expr)):  # raises on an evaluation error
                with_data.add(title)
    assert with_data >= PANELS_WITH_DATA, PANELS_WITH_DATA - with_data


async def _assert_rules_evaluate(prom: Prometheus) -> None:
    for name, expr in rule_exprs():
        assert isinstance(prom.query(expr), list), name  # raises on an error

    def rules() -> list[dict[str, object]]:
        return [r for g in prom.api("rules")["groups"] for r in g["rules"]]

    assert {r.get("name") for r in rules()} == {name for name, _e in rule_exprs()}

    # wait until every rule has run at least once with data
    def evaluated() -> bool:
        done = all(r["health"] != "unknown" for r in rules())
        # > 0: counters start at 0, so the first increase is visible to rate()
        return done and prom.value("synthguard:events_processed:rate5m") > 0

    try:
        await _until(evaluated, 75, "a rule evaluation round with data")
    except AssertionError as exc:
        state = [(r["name"], r["health"], r.get("lastEvaluation")) for r in rules()]
        raise AssertionError(f"{exc}: {state}") from None
    unhealthy = [
        (r["name"], r.get("lastError")) for r in rules() if r["health"] != "ok"
    ]
    assert not unhealthy, unhealthy


async def _assert_drift_moves_with_fakes(
    prom: Prometheus, case: StreamCase, images_dir: Path, n_before: int
) -> None:
    """After the reals, a batch of fakes moves the tenant's drift gauge."""
    psi = 'max(synthguard_score_drift_psi{tenant="default"})'
    window = 'max(synthguard_score_drift_window_events{tenant="default"})'
    on_reals = prom.value(psi)
    assert prom.value(window) == n_before
    fakes, _ids = file_events(_some_images(images_dir, 6, "fake"), "scrape-fake-")
    await case.produce(fakes)
    await case.verdicts_read(n_before + len(fakes), 180)
    await _until(
        lambda: prom.value(window) == n_before + len(fakes), 30, "the drift window"
    )
    assert prom.value(psi) != on_reals
