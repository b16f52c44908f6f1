from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    TopicAuthorizationFailedError,
)

from stream.app import make_worker
from stream.errors import FatalError
from stream.events import SourceRef
from stream.records import Failure, Incoming
from stream.runners.aiokafka_runner import AioKafkaRunner
from stream.runners.common import LagGauge, OutRecord, publish, wait_for_broker
from stream.runners.faust_runner import FaustRunner, app_settings
from stream.settings import StreamSettings


def _failure(offset: int) -> Failure:
    source = SourceRef(topic="up", partition=0, offset=offset)
    return Failure(Incoming(b"x", source), "truncated", "decode", "cut")


# a timeout (no metadata, expired batch) is an outage even though not `retriable`
@pytest.mark.parametrize("error", [KafkaConnectionError, KafkaTimeoutError])
async def test_publish_retries_the_batch_then_records_the_stage(
    error: type[KafkaError],
) -> None:
    worker = make_worker(StreamSettings())
    sent: list[OutRecord] = []
    failures = [1]

    async def send(out: OutRecord) -> asyncio.Future[Any]:
        if failures and failures.pop():
            raise error("broker away")
        sent.append(out)
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    ok = await publish(worker, [_failure(0), _failure(1)], send, asyncio.Event())
    assert ok
    assert [r.topic for r in sent] == [worker.settings.kafka.dlq_topic] * 2
    get = worker.metrics.registry.get_sample_value
    assert get("synthguard_stage_duration_seconds_count", {"stage": "publish"}) == 1


async def test_publish_gives_up_when_stopping() -> None:
    worker = make_worker(StreamSettings())
    stop = asyncio.Event()
    stop.set()

    async def send(out: OutRecord) -> asyncio.Future[Any]:
        raise KafkaConnectionError("broker away")

    assert not await publish(worker, [_failure(0)], send, stop)
    get = worker.metrics.registry.get_sample_value
    assert get("synthguard_stage_duration_seconds_count", {"stage": "publish"}) == 0


@pytest.mark.parametrize(
    "error", [TopicAuthorizationFailedError, MessageSizeTooLargeError]
)
async def test_publish_raises_on_a_refusal_instead_of_retrying(
    error: type[KafkaError],
) -> None:
    worker = make_worker(StreamSettings())
    sends: list[OutRecord] = []

    async def send(out: OutRecord) -> asyncio.Future[Any]:
        sends.append(out)
        raise error("refused")

    with pytest.raises(FatalError, match="publish refused"):
        await asyncio.wait_for(publish(worker, [_failure(0)], send, asyncio.Event()), 2)
    assert len(sends) == 1


@dataclass(frozen=True)
class _TP:
    topic: str
    partition: int


class _Consumer:
    def __init__(self) -> None:
        self.highwaters = {_TP("up", 0): 10, _TP("up", 1): None}
        self.positions = {_TP("up", 0): 4, _TP("up", 1): 0}

    def assignment(self) -> set[_TP]:
        return set(self.highwaters)

    def highwater(self, tp: _TP) -> int | None:
        return self.highwaters[tp]

    async def position(self, tp: _TP) -> int | None:
        return self.positions[tp]


async def test_lag_gauge_sets_known_partitions_at_most_every_interval() -> None:
    worker = make_worker(StreamSettings())
    gauge, consumer = LagGauge(worker.metrics, every_s=3600), _Consumer()
    await gauge.update(consumer)
    get = worker.metrics.registry.get_sample_value
    assert get("synthguard_consumer_lag_events", {"topic": "up", "partition": "0"}) == 6
    assert (
        get("synthguard_consumer_lag_events", {"topic": "up", "partition": "1"}) is None
    )
    consumer.positions[_TP("up", 0)] = 10
    await gauge.update(consumer)  # inside the interval: unchanged
    assert get("synthguard_consumer_lag_events", {"topic": "up", "partition": "0"}) == 6


async def test_both_runners_join_with_round_robin_by_default(tmp_path: Any) -> None:
    settings = StreamSettings()
    runner = AioKafkaRunner(make_worker(settings))
    strategy = runner.consumer._partition_assignment_strategy
    assert [a.name for a in strategy] == [RoundRobinPartitionAssignor.name]
    # without tables faust's aiokafka driver joins with RoundRobinPartitionAssignor
    assert app_settings(settings, tmp_path)["table_standby_replicas"] == 0


def test_faust_runner_refuses_an_assignor_it_cannot_join_with() -> None:
    settings = StreamSettings(kafka={"partition_assignor": "range"})
    with pytest.raises(FatalError, match="roundrobin only"):
        FaustRunner(settings, make_worker(settings))


async def test_both_runners_pass_the_static_member_id(tmp_path: Any) -> None:
    settings = StreamSettings(kafka={"group_instance_id": "synthguard-worker-7"})
    runner = AioKafkaRunner(make_worker(settings))
    assert runner.consumer._group_instance_id == "synthguard-worker-7"
    faust_conf = app_settings(settings, tmp_path)
    assert faust_conf["consumer_group_instance_id"] == "synthguard-worker-7"


def test_faust_app_builds_its_consumer_with_the_static_member_id() -> None:
    settings = StreamSettings(kafka={"group_instance_id": "synthguard-worker-7"})
    runner = FaustRunner(settings, make_worker(settings))
    try:
        assert runner.app.conf.consumer_group_instance_id == "synthguard-worker-7"
    finally:
        import shutil

        shutil.rmtree(runner.datadir, ignore_errors=True)


async def test_wait_for_broker_probes_until_the_broker_answers() -> None:
    answers = [False, False, True]

    async def probe() -> bool:
        return answers.pop(0)

    up = await wait_for_broker(probe, "127.0.0.1:1", 0.001, asyncio.Event())
    assert up
    assert answers == []  # asked three times, and not once more


async def test_wait_for_broker_gives_up_when_stopped_meanwhile() -> None:
    stop, calls = asyncio.Event(), []

    async def probe() -> bool:
        calls.append(1)
        stop.set()  # e.g. SIGTERM while the broker is still away
        return False

    # it must return at once, not after sleeping out its 60 s poll
    waited = wait_for_broker(probe, "127.0.0.1:1", 60.0, stop)
    assert not await asyncio.wait_for(waited, 5.0)
    assert calls == [1]
