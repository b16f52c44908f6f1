from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry

import serving
from stream import names
from stream.dev.testing import FAKE_VERSIONS
from stream.events import SourceRef, StageTimings, Verdict, utc_now
from stream.health import Health, build_app, first_bootstrap
from stream.metrics import StreamMetrics
from stream.records import Failure, Incoming


def _verdict(label: str, cached: bool = False) -> Verdict:
    return Verdict(
        image_id="i",
        content_sha256="0" * 64,
        label=label,  # type: ignore[arg-type]
        probability=0.9,
        threshold=0.5,
        uncertain_low=0.4,
        head_scores={},
        nearest_exemplars=[],
        versions=FAKE_VERSIONS,
        timings=StageTimings(fetch_s=0.001, decode_s=0.01, infer_s=0.2, total_s=0.3),
        source=SourceRef(topic="t", partition=0, offset=0),
        tenant="default",
        cached=cached,
        decided_at=utc_now(),
    )


def test_metrics_names_have_prefix_and_base_units() -> None:
    registry = CollectorRegistry()
    StreamMetrics(registry).set_model(FAKE_VERSIONS)
    families = {m.name for m in registry.collect()}
    assert all(n.startswith(names.PREFIX) for n in families)
    assert names.METRIC_STAGE_SECONDS in families
    assert (
        registry.get_sample_value("synthguard_model_info", FAKE_VERSIONS.model_dump())
        == 1.0
    )


def test_metrics_observe_batch_counts_outcomes() -> None:
    registry = CollectorRegistry()
    metrics = StreamMetrics(registry)
    failure = Failure(Incoming(b"", SourceRef(topic="t", partition=0, offset=1)),
                      "truncated", "decode", "cut")  # fmt: skip
    outcomes = [_verdict("real"), _verdict("real", cached=True), failure]
    metrics.observe_batch(outcomes, [None, None, None])
    get = registry.get_sample_value
    assert get("synthguard_verdicts_total", {"label": "real"}) == 2
    assert (
        get(
            "synthguard_dlq_events_total",
            {"error_class": "truncated", "stage": "decode"},
        )
        == 1
    )
    assert get("synthguard_events_processed_total", {"outcome": "dlq"}) == 1
    assert get("synthguard_dedupe_hits_total") == 1
    assert get("synthguard_batch_size_events_count") == 1
    assert get("synthguard_stage_duration_seconds_count", {"stage": "infer"}) == 1


@pytest.fixture
async def client() -> AsyncIterator[tuple[TestClient, Health]]:
    state = {"detector": True}

    async def broker() -> bool:
        return True

    async def detector() -> bool:
        return state["detector"]

    health = Health(broker=broker, detector=detector, started=True)
    app = build_app(CollectorRegistry(), health)
    async with TestClient(TestServer(app)) as c:
        yield c, health


async def test_health_endpoints(client: tuple[TestClient, Health]) -> None:
    c, health = client
    assert (await c.get("/healthz")).status == 200
    assert (await c.get("/readyz")).status == 200
    health.circuit_open = True
    resp = await c.get("/readyz")
    assert resp.status == 503
    assert "detector circuit open" in (await resp.json())["reasons"]
    metrics = await c.get("/metrics")
    assert metrics.status == 200
    assert metrics.content_type == "text/plain"


async def test_healthz_fails_once_the_consumer_is_dead(
    client: tuple[TestClient, Health],
) -> None:
    c, health = client
    health.dead = "consumer group error: InconsistentGroupProtocolError()"
    resp = await c.get("/healthz")
    assert resp.status == 503
    assert "InconsistentGroupProtocol" in (await resp.json())["status"]


def test_first_bootstrap() -> None:
    assert first_bootstrap("127.0.0.1:9092,other:1") == ("127.0.0.1", 9092)
    assert first_bootstrap("[::1]:19092") == ("::1", 19092)


async def test_metrics_scrape_refreshes_the_readiness_gauge() -> None:
    from stream.app import make_worker
    from stream.settings import StreamSettings

    worker = make_worker(StreamSettings())
    up = {"ok": True}

    async def probe() -> bool:
        return up["ok"]

    worker.health.broker = worker.health.detector = probe
    worker.health.started = True
    app = build_app(worker.metrics.registry, worker.health)
    get = worker.metrics.registry.get_sample_value
    async with TestClient(TestServer(app)) as c:
        assert "synthguard_ready 1.0" in await (await c.get("/metrics")).text()
        up["ok"] = False
        assert "synthguard_ready 0.0" in await (await c.get("/metrics")).text()
    assert get(names.METRIC_READY) == 0.0
    assert get("synthguard_build_info", {"version": serving.__version__}) == 1.0


def test_known_label_values_are_exported_at_zero() -> None:
    registry = CollectorRegistry()
    StreamMetrics(registry)
    get = registry.get_sample_value
    for label in names.LABELS:
        assert get("synthguard_verdicts_total", {"label": label}) == 0.0
    for outcome in names.OUTCOMES:
        assert get("synthguard_events_processed_total", {"outcome": outcome}) == 0.0
    for stage in names.STAGES:
        assert get("synthguard_stage_duration_seconds_count", {"stage": stage}) == 0.0
