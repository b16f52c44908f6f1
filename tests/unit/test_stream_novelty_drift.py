from __future__ import annotations

import json

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from serving.scoring.drift import fit_score_reference
from stream.dev.testing import FAKE_VERSIONS
from stream.events import SourceRef, StageTimings, Verdict, utc_now
from stream.metrics import StreamMetrics


def _verdict(probability: float, tenant: str = "t1", **kw: object) -> Verdict:
    return Verdict.model_validate(
        {
            "image_id": "i",
            "content_sha256": "0" * 64,
            "label": "uncertain",
            "probability": probability,
            "threshold": 0.5,
            "uncertain_low": 0.4,
            "head_scores": {},
            "nearest_exemplars": [],
            "versions": FAKE_VERSIONS,
            "timings": StageTimings(),
            "source": SourceRef(topic="t", partition=0, offset=0),
            "tenant": tenant,
            "decided_at": utc_now(),
            **kw,
        }
    )


def test_verdict_reasons_are_omitted_when_empty_so_1_0_readers_see_no_change() -> None:
    plain = json.loads(_verdict(0.45).model_dump_json())
    assert "reasons" not in plain
    novel = _verdict(0.1, reasons=["novel"])
    assert json.loads(novel.model_dump_json())["reasons"] == ["novel"]
    assert Verdict.model_validate_json(novel.model_dump_json()) == novel
    assert Verdict.model_validate(plain).reasons == []


def test_novel_verdicts_are_counted() -> None:
    registry = CollectorRegistry()
    metrics = StreamMetrics(registry)
    batch = [_verdict(0.1, reasons=["novel"]), _verdict(0.45)]
    metrics.observe_batch(batch, [None, None])
    assert registry.get_sample_value("synthguard_novel_verdicts_total") == 1


def test_drift_gauge_moves_when_the_stream_turns_from_reals_to_fakes() -> None:
    rng = np.random.default_rng(0)
    cal = np.r_[rng.uniform(0.0, 0.3, 500), rng.uniform(0.7, 1.0, 500)]
    registry = CollectorRegistry()
    metrics = StreamMetrics(registry)
    metrics.set_model(FAKE_VERSIONS, fit_score_reference(cal))

    def psi_after(probabilities: np.ndarray) -> float:
        batch = [_verdict(float(p)) for p in probabilities]
        metrics.observe_batch(batch, [None] * len(batch))
        value = registry.get_sample_value(
            "synthguard_score_drift_psi", {"tenant": "t1"}
        )
        assert value is not None
        return value

    mixed = psi_after(rng.permutation(cal)[:500])
    fakes = psi_after(rng.uniform(0.7, 1.0, 500))
    assert mixed < 0.1 < 0.25 < fakes
    window = registry.get_sample_value(
        "synthguard_score_drift_window_events", {"tenant": "t1"}
    )
    assert window == 500


def test_drift_window_and_tenant_cap_come_from_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream.app import make_worker
    from stream.settings import StreamSettings

    monkeypatch.setenv("SYNTHGUARD_METRICS__DRIFT_WINDOW", "50")
    monkeypatch.setenv("SYNTHGUARD_METRICS__DRIFT_MAX_TENANTS", "1")
    registry = CollectorRegistry()
    worker = make_worker(StreamSettings(), registry)
    cal = np.random.default_rng(0).uniform(0.0, 1.0, 1000)
    worker.metrics.set_model(FAKE_VERSIONS, fit_score_reference(cal))
    batch = [_verdict(0.5, tenant=t) for t in ("t1", "t2", "t3") for _ in range(80)]
    worker.metrics.observe_batch(batch, [None] * len(batch))
    sample = registry.get_sample_value
    assert sample("synthguard_score_drift_window_events", {"tenant": "t1"}) == 50
    assert sample("synthguard_score_drift_window_events", {"tenant": "other"}) == 50
    assert sample("synthguard_score_drift_window_events", {"tenant": "t2"}) is None
