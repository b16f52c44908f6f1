"""Adapter: the faust-streaming alternative runner on the same pipeline.

One agent with ``concurrency=1`` (faust commits past in-flight messages with more,
faust-streaming#606) takes batches with ``take_events``. Bad events are DLQ records;
a bug ends the process at once (exit 2) without committing its batch (`step`,
`_exit_now`: faust's own shutdown would ack what its stream buffered); nothing raises out of
``take`` and no table is written inside it (faust would ack, i.e. skip, the batch).
The tritonclient aio channel opens on its first call, i.e. on faust's loop.
``producer_max_batch_size=1`` keeps every record in its own batch (Tansu's ListOffsets
bug).

faust acks a ``take`` batch in a ``finally``, even when the agent is cancelled at
shutdown. A batch held by a Triton outage therefore has its messages marked as
acked *without* telling the consumer (`_withhold`): faust commits only contiguous
acked offsets, so nothing at or past the held batch is committed, and a restarted
worker reads it again.

The consumer joins with aiokafka's round-robin assignor (no tables, so
``table_standby_replicas=0`` keeps faust's own ``faust`` protocol out), the same as
the aiokafka runner, so the two can share a group. faust itself never surfaces a
failed join (its fetcher does not poll without partitions): a watchdog stops the
worker with `FatalError` (exit 2) on a fatal group error, or when no assignment has
arrived within `join_deadline_s`. The health endpoint starts before faust does, and
the app starts only once the broker answers (`common.wait_for_broker`): faust's
bootstrap would otherwise fail on a broker that is not up yet and end the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import faust

from stream.errors import FatalError
from stream.events import SourceRef
from stream.health import HealthServer, announce
from stream.kafka_security import faust_credentials
from stream.readiness import close_probe
from stream.records import Incoming
from stream.runners import common
from stream.runners.common import OutRecord, Worker
from stream.settings import StreamSettings

logger = logging.getLogger(__name__)


def incoming(event: Any) -> Incoming:
    """A faust ``Event`` (raw serializers) as a transport-neutral `Incoming`."""
    msg = event.message
    ts = msg.timestamp
    return Incoming(
        payload=msg.value or b"",
        source=SourceRef(topic=msg.topic, partition=msg.partition, offset=msg.offset),
        key=msg.key,
        timestamp_ms=int(ts * 1000) if ts is not None else None,
    )


def _exit_now(code: int) -> None:
    """End the process without faust's shutdown (so nothing more is committed)."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _withhold(events: Sequence[Any]) -> None:
    for event in events:
        event.message.acked = True  # see the module docstring


def app_settings(settings: StreamSettings, datadir: Path) -> dict[str, Any]:
    """Faust ``App`` keyword settings for this worker (faust writes under `datadir`)."""
    k = settings.kafka
    return {
        "broker": [f"kafka://{s.strip()}" for s in k.bootstrap_servers.split(",")],
        "processing_guarantee": "at_least_once",
        "store": "memory://",
        "datadir": str(datadir),
        "web_enabled": False,
        "topic_disable_leader": True,
        "producer_max_batch_size": 1,
        "producer_acks": -1,
        "producer_max_request_size": k.max_request_bytes,
        "consumer_max_fetch_size": k.max_partition_fetch_bytes,
        "consumer_auto_offset_reset": "earliest",
        "broker_session_timeout": k.session_timeout_ms / 1000,
        "broker_rebalance_timeout": k.rebalance_timeout_ms / 1000,
        "broker_heartbeat_interval": k.heartbeat_interval_ms / 1000,
        "broker_commit_interval": 1.0,
        "broker_credentials": faust_credentials(k),
        "table_standby_replicas": 0,  # faust's driver then joins with round-robin
        "consumer_group_instance_id": k.group_instance_id,  # static membership
    }


def join_deadline_s(settings: StreamSettings) -> float:
    """How long a worker may go without a group assignment before it gives up."""
    k = settings.kafka
    return max(60.0, 3 * (k.session_timeout_ms + k.rebalance_timeout_ms) / 1000)


def group_error(app: Any) -> BaseException | None:
    """The fatal error aiokafka holds for faust's consumer, if any (best effort)."""
    thread = getattr(app.consumer, "_thread", None)
    consumer = getattr(thread, "_consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    pending = getattr(coordinator, "_pending_exception", None)
    if isinstance(pending, common.FATAL_GROUP_ERRORS) and isinstance(
        pending, BaseException
    ):
        return pending
    task = getattr(coordinator, "_coordination_task", None)
    if isinstance(task, asyncio.Future) and task.done() and not task.cancelled():
        died = task.exception()  # the coordinator is gone: nothing will rejoin
        return died if isinstance(died, BaseException) else None
    return None


class FaustRunner:
    """Builds the faust app around a `Worker`."""

    def __init__(self, settings: StreamSettings, worker: Worker) -> None:
        self.settings, self.worker = settings, worker
        self._lag = common.LagGauge(worker.metrics)
        self._fatal: str | None = None
        self._assigned = False
        self._health: HealthServer | None = None
        k = settings.kafka
        if k.partition_assignor != "roundrobin":
            raise FatalError(
                f"the faust runner joins with roundrobin only, not {k.partition_assignor}"
                " (SYNTHGUARD_KAFKA__PARTITION_ASSIGNOR)"
            )
        # removed by run(); the store is in memory, nothing there outlives a process
        self.datadir = Path(tempfile.mkdtemp(prefix="synthguard-faust-"))
        self.app = faust.App(k.group_id, **app_settings(settings, self.datadir))
        self.uploads = self._raw_topic(k.uploads_topic)
        self.out_topics = {
            n: self._raw_topic(n) for n in (k.verdicts_topic, k.dlq_topic)
        }
        self.app.agent(self.uploads, name="moderate", concurrency=1)(self._agent)
        self.app.on_partitions_assigned.connect(self._on_assigned)
        self._watch: asyncio.Task[None] | None = None

    async def _on_assigned(self, *_args: Any, **_kwargs: Any) -> None:
        self._assigned = True

    async def _watch_group(self) -> None:
        deadline = time.monotonic() + join_deadline_s(self.settings)
        while self._fatal is None:
            await asyncio.sleep(0.5)
            exc = group_error(self.app)
            if exc is not None:
                self._die(f"consumer group error: {exc!r}")
            elif not self._assigned and time.monotonic() > deadline:
                self._die("no partition assignment before the join deadline")

    def _die(self, reason: str) -> None:
        logger.error("%s; stopping (the orchestrator restarts the pod)", reason)
        self._fatal = self.worker.health.dead = reason
        signal.raise_signal(signal.SIGTERM)  # faust's own clean shutdown

    def _raw_topic(self, name: str) -> Any:
        return self.app.topic(
            name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
        )

    async def _agent(self, stream: Any) -> AsyncIterator[None]:
        stop = asyncio.Event()
        pipeline = await common.build_pipeline(self.worker, stop)
        if pipeline is None:
            return
        self.worker.health.started = True
        w = self.settings.worker
        within = max(w.batch_wait_ms, 10) / 1000
        async for events in stream.take_events(w.batch_max, within=within):
            held, batch = list(events), [incoming(e) for e in events]
            for e in batch:
                self.worker.metrics.consumed.labels(e.source.topic).inc()
            try:
                if await common.step(self.worker, pipeline, batch, self._send, stop):
                    held = []
                    await self._lag.update(self.app.consumer)
            except Exception:  # a bug: stop as the aiokafka runner does
                logger.exception("batch failed; stopping, not committed")
                _withhold(held)
                # Exit at once: faust's clean shutdown acks the events its stream has
                # buffered and commits them (seen under load), and raising would only
                # restart the agent. The orchestrator restarts the pod.
                _exit_now(2)
            finally:
                _withhold(held)
            yield None

    async def _send(self, out: OutRecord) -> Any:
        topic = self.out_topics[out.topic]
        return await topic.send(key=out.key, value=out.value, headers=out.headers)

    async def start_health(self) -> None:
        """Serve ``/metrics``, ``/healthz`` and ``/readyz``.

        Called before faust starts its app: an app task would only run once the
        consumer has joined, i.e. never when it cannot.
        """
        m = self.settings.metrics
        if m.enabled and self._health is None:
            self._health = HealthServer(
                self.worker.metrics.registry, self.worker.health, m.host, m.port
            )
            announce(await self._health.start())

    async def wait_for_broker(self) -> None:
        """Wait, alive and not ready, until the broker answers; then watch the join.

        Called before faust starts its app, whose clients would fail their bootstrap
        and end the worker at once on a broker that is not up yet. The join deadline
        counts from here. A SIGTERM meanwhile cancels the wait: faust's worker
        cancels its own start, so no stop event of ours is needed.
        """
        probe, poll_s = self.worker.health.broker, self.settings.worker.outage_poll_s
        bootstrap = self.settings.kafka.bootstrap_servers
        await common.wait_for_broker(probe, bootstrap, poll_s, asyncio.Event())
        self._watch = self._watch or asyncio.create_task(self._watch_group())

    async def stop_health(self) -> None:
        """Stop the health endpoint and the watchdog."""
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        if self._health is not None:
            await self._health.stop()
            self._health = None
        await close_probe(self.worker.health.broker)

    def run(self) -> None:
        """Run the faust worker until SIGTERM/SIGINT (exits the process).

        Raises:
            FatalError: the consumer group could not be joined (see module doc).
        """
        level = logging.getLevelName(logging.getLogger().getEffectiveLevel()).lower()
        worker = _HealthFirstWorker(
            self,
            self.app,
            loglevel=level if level != "warning" else "warn",
            redirect_stdouts=False,  # the endpoint announcement stays on stdout
        )
        try:
            worker.execute_from_commandline()
        except SystemExit:  # how it always leaves
            if self._fatal is None:
                raise
            raise FatalError(self._fatal) from None
        finally:
            shutil.rmtree(self.datadir, ignore_errors=True)


class _HealthFirstWorker(faust.Worker):
    """A faust worker whose health endpoint is up before the app starts."""

    def __init__(self, runner: FaustRunner, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._runner = runner

    async def on_first_start(self) -> None:
        await super().on_first_start()  # SIGTERM handlers first: a clean stop
        await self._runner.start_health()  # then, still before the app starts
        await self._runner.wait_for_broker()

    async def on_stop(self) -> None:
        await super().on_stop()
        await self._runner.stop_health()
