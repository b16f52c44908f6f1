"""Adapter: the default runner, plain aiokafka.

The runner waits for the detector, then for the broker (`common.wait_for_model`,
`common.wait_for_broker`), alive and not ready, before it starts its clients
(`common.start_clients`: fresh ones and another wait when the broker goes away
between its answer and their start). One
poll loop calls ``getmany`` all the time (so the consumer stays in its group)
and hands each batch to a task; at most ``max_concurrent_batches`` run at once and
partitions pause while ``max_in_flight`` events are unfinished or the detector is
down. A task publishes every outcome, awaits the broker's acknowledgements, marks
the offsets done in the `OffsetTracker` and commits up to the first undelivered
offset per partition. Revocation drains, commits and forgets; SIGTERM (the ``stop``
event) drains within ``drain_timeout_s``, commits, leaves the group.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from stream.errors import FatalError
from stream.events import SourceRef
from stream.offsets import OffsetTracker
from stream.pipeline import Pipeline
from stream.records import Incoming
from stream.runners.clients import consumer_options
from stream.runners.clients import producer as kafka_producer
from stream.runners.common import (
    ASSIGNORS,
    FATAL_GROUP_ERRORS,
    LagGauge,
    OutRecord,
    Worker,
    build_pipeline,
    start_clients,
    step,
)

logger = logging.getLogger(__name__)


def incoming(record: Any) -> Incoming:
    """An aiokafka ``ConsumerRecord`` as a transport-neutral `Incoming`."""
    return Incoming(
        payload=record.value or b"",
        source=SourceRef(
            topic=record.topic, partition=record.partition, offset=record.offset
        ),
        key=record.key,
        timestamp_ms=record.timestamp,
    )


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # untyped base
    def __init__(self, runner: AioKafkaRunner) -> None:
        self.runner = runner

    async def on_partitions_revoked(self, revoked: Any) -> None:
        await self.runner.on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        logger.info("assigned %s", sorted(assigned))
        self.runner.worker.health.started = True


class AioKafkaRunner:
    """Consume uploads, publish verdicts and DLQ records, commit safely."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.consumer, self.producer = self._clients()
        w = worker.settings.worker
        self.tracker: OffsetTracker[Any] = OffsetTracker()
        self._tasks: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(w.max_concurrent_batches)
        self._generation = 0
        self._paused = False
        self._lag = LagGauge(worker.metrics)
        self._stop = asyncio.Event()
        self._pipeline: Pipeline | None = None
        self._failure: BaseException | None = None

    async def run(self, stop: asyncio.Event) -> None:
        """Run until `stop` is set, then drain and leave the group.

        Raises:
            FatalError: a batch task failed unexpectedly (after a drain and a commit
                of what was delivered; the process should exit and be restarted),
                the group cannot be joined (`FATAL_GROUP_ERRORS`), or the broker
                refuses the clients for good (`common.start_clients`).
        """
        self._stop = stop
        self._pipeline = await build_pipeline(self.worker, stop)
        if self._pipeline is None:
            return
        k, w = self.worker.settings.kafka, self.worker.settings.worker
        started = None
        try:
            started = await start_clients(
                (self.consumer, self.producer),
                self._clients,
                self.worker.health.broker,
                k.bootstrap_servers,
                w.outage_poll_s,
                stop,
            )
        finally:
            if started is None:
                await self._pipeline.close()
        if started is None:
            return
        self.consumer, self.producer = started
        try:
            topic = self.worker.settings.kafka.uploads_topic
            self.consumer.subscribe([topic], listener=_Listener(self))
            try:
                await self._poll(stop)
            except FATAL_GROUP_ERRORS as exc:
                self.worker.health.dead = f"consumer group error: {exc!r}"
                raise FatalError(self.worker.health.dead) from exc
            finally:
                await self._drain()
                await self._commit()
                await self.consumer.stop()
        finally:
            self.worker.health.started = False
            await self.producer.stop()
            await self._pipeline.close()
        if self._failure is not None:
            raise FatalError(f"batch task failed: {self._failure!r}") from self._failure

    def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        k, w = self.worker.settings.kafka, self.worker.settings.worker
        consumer = AIOKafkaConsumer(
            **consumer_options(k, k.group_id),
            max_poll_records=w.batch_max,
            rebalance_timeout_ms=k.rebalance_timeout_ms,
            group_instance_id=k.group_instance_id,
            partition_assignment_strategy=(ASSIGNORS[k.partition_assignor],),
        )
        return consumer, kafka_producer(k)

    async def _poll(self, stop: asyncio.Event) -> None:
        w = self.worker.settings.worker
        while not stop.is_set():
            self._backpressure()
            batches = await self.consumer.getmany(
                timeout_ms=max(w.batch_wait_ms, 10), max_records=w.batch_max
            )
            records = [r for recs in batches.values() for r in recs]
            for tp, recs in batches.items():
                self.tracker.add(tp, (r.offset for r in recs))
                self.worker.metrics.consumed.labels(tp.topic).inc(len(recs))
            if records:
                task = asyncio.create_task(self._process(records, self._generation))
                self._tasks.add(task)
                task.add_done_callback(self._task_done)
            self.worker.metrics.inflight.set(self.tracker.outstanding)
            await self._lag.update(self.consumer)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None:
            return
        # a bug, not a bad event (those are DLQ records): stop, never skip
        exc = task.exception()
        logger.error("batch failed; stopping, not committed", exc_info=exc)
        self._failure = self._failure or exc
        self.worker.health.dead = f"batch failed: {exc!r}"
        self._stop.set()

    def _backpressure(self) -> None:
        limit = self.worker.settings.worker.max_in_flight
        busy = self.tracker.outstanding >= limit or self.worker.health.circuit_open
        idle = self.tracker.outstanding <= limit // 2
        assigned = self.consumer.assignment()
        if busy and not self._paused and assigned:
            logger.info("pausing %d partitions", len(assigned))
            self.consumer.pause(*assigned)
            self._paused = True
        elif self._paused and idle and not self.worker.health.circuit_open:
            logger.info("resuming partitions")
            self.consumer.resume(*assigned)
            self._paused = False

    async def _process(self, records: Sequence[Any], generation: int) -> None:
        async with self._slots:
            if self._pipeline is None or generation != self._generation:
                return
            batch = [incoming(r) for r in records]
            if not await step(
                self.worker, self._pipeline, batch, self._send, self._stop
            ):
                return  # stopping: not delivered, so not committed
            if generation != self._generation:
                return  # revoked meanwhile: the tracker was reset
            for r in records:
                self.tracker.done(_tp(r), r.offset)
        await self._commit()

    async def _send(self, out: OutRecord) -> Any:
        return await self.producer.send(
            out.topic, out.value, key=out.key, headers=out.headers
        )

    async def _commit(self) -> None:
        assigned = self.consumer.assignment()
        positions = {
            tp: p for tp, p in self.tracker.to_commit().items() if tp in assigned
        }
        if not positions:
            return
        try:
            await self.consumer.commit(positions)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            logger.warning("commit of %s failed: %r", positions, exc)
            return
        self.tracker.mark_committed(positions)
        self.worker.metrics.commits.inc()
        logger.debug("committed %s", positions)

    async def on_revoked(self, revoked: Any) -> None:
        """Drain in-flight work (bounded), commit what is delivered, forget the rest."""
        self.worker.metrics.rebalances.inc()
        logger.info("revoking %s", sorted(revoked))
        await self._drain()
        await self._commit()
        self._generation += 1
        self.tracker.reset()
        self._paused = False

    async def _drain(self) -> None:
        pending = set(self._tasks)
        if not pending:
            return
        timeout = self.worker.settings.worker.drain_timeout_s
        _done, late = await asyncio.wait(pending, timeout=timeout)
        for task in late:
            task.cancel()
        for task in late:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if late:
            logger.warning("%d batches unfinished after %.1f s", len(late), timeout)


def _tp(record: Any) -> Any:
    return TopicPartition(record.topic, record.partition)
