"""The aiokafka runner on the real embedded broker, with an in-process fake detector.

Covers what needs a broker but not Triton: exactly one verdict per good event, DLQ
records with typed headers, commits only past delivered events, readiness while the
detector is down, and resumption. The real-Triton suite is tests/e2e.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from stream.app import make_worker, serve
from stream.dev.broker import TansuBroker, create_topics, locate_tansu
from stream.dev.produce import producer
from stream.dev.testing import (
    FakeDetector,
    committed_offsets,
    jpeg_bytes,
    read_topic,
    truncated_jpeg,
)
from stream.errors import FatalError
from stream.events import DeadLetterHeaders, UploadEvent, utc_now
from stream.runners.common import Worker
from stream.settings import StreamSettings

PARTITIONS = 2


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    try:
        locate_tansu()
    except FatalError as exc:
        pytest.skip(str(exc))
    with TansuBroker() as b:
        yield b


def _settings(bootstrap: str) -> StreamSettings:
    tag = uuid.uuid4().hex[:8]
    return StreamSettings(
        kafka={
            "bootstrap_servers": bootstrap,
            "uploads_topic": f"up.{tag}",
            "verdicts_topic": f"verdicts.{tag}",
            "dlq_topic": f"dlq.{tag}",
            "group_id": f"g.{tag}",
            "partitions": PARTITIONS,
        },
        worker={
            "batch_max": 4,
            "batch_wait_ms": 20,
            "max_in_flight": 8,
            "outage_poll_s": 0.2,
            "infer_attempts": 2,
            "infer_backoff_s": 0.05,
            "drain_timeout_s": 5,
        },
        metrics={"port": 0},
    )


class Running:
    def __init__(self, settings: StreamSettings, worker: Worker) -> None:
        self.settings, self.worker, self.url = settings, worker, ""


async def _create_topics(settings: StreamSettings) -> None:
    k = settings.kafka
    await create_topics(
        k.bootstrap_servers,
        [k.uploads_topic, k.verdicts_topic, k.dlq_topic],
        PARTITIONS,
    )


@pytest.fixture
async def running(broker: TansuBroker) -> AsyncIterator[Running]:
    settings = _settings(broker.bootstrap)
    await _create_topics(settings)
    worker = make_worker(settings, CollectorRegistry(), FakeDetector())
    run = Running(settings, worker)
    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(settings, stop, worker, on_url=lambda u: setattr(run, "url", u))
    )
    yield run
    stop.set()
    await asyncio.wait_for(task, 30)


async def _produce(settings: StreamSettings, payloads: list[bytes]) -> None:
    prod = producer(settings.kafka.bootstrap_servers)
    await prod.start()
    try:
        for i, p in enumerate(payloads):
            await (await prod.send(settings.kafka.uploads_topic, p, key=b"k%d" % i))
    finally:
        await prod.stop()


def _good(image_id: str, shade: int) -> bytes:
    data = jpeg_bytes((shade, shade, shade))
    return (
        UploadEvent(
            image_id=image_id,
            data_b64=base64.b64encode(data).decode(),
            uploaded_at=utc_now(),
        )
        .model_dump_json()
        .encode()
    )


async def _verdict_ids(settings: StreamSettings, n: int, timeout_s: float) -> list[str]:
    records = await read_topic(
        settings.kafka.bootstrap_servers,
        settings.kafka.verdicts_topic,
        PARTITIONS,
        lambda rs: len(rs) >= n,
        timeout_s,
    )
    return [json.loads(r.value)["image_id"] for r in records]


async def test_runner_n_in_n_verdicts_poison_to_dlq_and_commits(
    running: Running,
) -> None:
    s = running.settings
    good = [_good(f"g{i}", 20 * i) for i in range(10)]
    poison = [b"{bad json", b'{"image_id": "m"}', _good("z", 0).replace(b"/", b"!")]
    trunc = UploadEvent(
        image_id="t",
        data_b64=base64.b64encode(truncated_jpeg()).decode(),
        uploaded_at=utc_now(),
    )
    payloads = good[:5] + poison + [trunc.model_dump_json().encode()] + good[5:]
    await _produce(s, payloads)
    ids = await _verdict_ids(s, 10, 60)
    assert sorted(ids) == sorted(f"g{i}" for i in range(10))
    dlq = await read_topic(
        s.kafka.bootstrap_servers,
        s.kafka.dlq_topic,
        PARTITIONS,
        lambda rs: len(rs) >= 4,
    )
    headers = [DeadLetterHeaders.from_kafka(list(r.headers)) for r in dlq]
    classes = sorted(h.error_class for h in headers)
    assert classes == ["bad_base64", "bad_json", "schema", "truncated"]
    assert {r.value for r in dlq} == {*poison, trunc.model_dump_json().encode()}
    await asyncio.sleep(1.0)  # the last batch's commit follows its delivery
    committed = await committed_offsets(
        s.kafka.bootstrap_servers, s.kafka.group_id, s.kafka.uploads_topic, PARTITIONS
    )
    assert sum(v or 0 for v in committed.values()) == len(payloads)
    _status, body = await _get(f"{running.url}/metrics")
    assert 'synthguard_verdicts_total{label="real"}' in body


async def test_runner_holds_commits_while_detector_down_then_resumes(
    running: Running,
) -> None:
    s = running.settings
    detector: Any = running.worker.detector
    await _produce(s, [_good("before", 10)])
    assert await _verdict_ids(s, 1, 60) == ["before"]
    await asyncio.sleep(1.0)
    before = await committed_offsets(
        s.kafka.bootstrap_servers, s.kafka.group_id, s.kafka.uploads_topic, PARTITIONS
    )
    detector.down = True
    await _produce(s, [_good(f"during{i}", 30 * i) for i in range(6)])
    await asyncio.sleep(3.0)  # consumed, retried, held
    assert await _verdict_ids(s, 2, 1) == ["before"]
    assert (await _get(f"{running.url}/readyz"))[0] == 503
    during = await committed_offsets(
        s.kafka.bootstrap_servers, s.kafka.group_id, s.kafka.uploads_topic, PARTITIONS
    )
    assert during == before  # nothing committed past the held events
    detector.down = False
    ids = await _verdict_ids(s, 7, 30)
    assert sorted(ids) == sorted(["before", *(f"during{i}" for i in range(6))])
    await asyncio.sleep(1.0)
    after = await committed_offsets(
        s.kafka.bootstrap_servers, s.kafka.group_id, s.kafka.uploads_topic, PARTITIONS
    )
    assert sum(v or 0 for v in after.values()) == 7
    assert (await _get(f"{running.url}/readyz"))[0] == 200


async def _get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        return resp.status, await resp.text()


class _BuggyDetector(FakeDetector):
    async def detect(self, images: Any) -> Any:
        raise RuntimeError("a bug, not a bad event")


async def test_runner_stops_on_an_unexpected_batch_error_without_committing(
    broker: TansuBroker,
) -> None:
    settings = _settings(broker.bootstrap)
    await _create_topics(settings)
    worker = make_worker(settings, CollectorRegistry(), _BuggyDetector())
    await _produce(settings, [_good("x", 10)])
    with pytest.raises(FatalError, match="a bug"):
        await asyncio.wait_for(serve(settings, asyncio.Event(), worker), 60)
    k = settings.kafka
    committed = await committed_offsets(
        k.bootstrap_servers, k.group_id, k.uploads_topic, PARTITIONS
    )
    assert all((v or 0) == 0 for v in committed.values())  # the event is not skipped
