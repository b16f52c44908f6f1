"""Application: what both runners share around the pipeline.

- `wait_for_model`: start-up waits (readiness false) until the detector answers.
- `wait_for_broker`: the same for the broker, before a runner starts its clients.
- `start_clients`: start the Kafka clients once the broker answers, with fresh
  clients and another wait when it goes away between the answer and the start.
- `process_until_done`: a batch either completes or the worker stops; a detector
  outage opens the circuit (readiness false, the runner pauses and stops
  committing) and the same batch is retried once the detector is back: never skipped.
- `encode`: an outcome as a Kafka record (verdict JSON, or the original payload with
  DLQ headers).
- `publish`: send a batch's records and await every ack, retrying the whole batch on
  retriable broker errors; records the ``publish`` stage time.
- `step`: process → publish → observe, the one batch step of both runners. It
  returns whether the batch was delivered (only then may it be committed) and raises
  on a bug; both runners then stop without committing the batch, so the
  orchestrator restarts the worker and the batch is redelivered (docs/streaming.md).
- `LagGauge`: highwater minus position per assigned partition, at most once a second.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    InconsistentGroupProtocolError,
    InvalidGroupIdError,
    InvalidSessionTimeoutError,
    KafkaError,
    KafkaTimeoutError,
)

from stream.decode import DecodeLimits
from stream.errors import FatalError, TransientError
from stream.fetch import FetchLimits
from stream.health import Health, Probe
from stream.metrics import StreamMetrics
from stream.pipeline import Pipeline, PipelineConfig
from stream.ports import Detector, ModelInfo
from stream.records import Failure, Incoming, Outcome
from stream.settings import KafkaSettings, StreamSettings

logger = logging.getLogger(__name__)

ASSIGNORS: dict[str, type[Any]] = {
    "roundrobin": RoundRobinPartitionAssignor,
    "range": RangePartitionAssignor,
}
# the group can never be joined with this configuration: exit, let it be restarted
FATAL_GROUP_ERRORS: tuple[type[KafkaError], ...] = (
    InconsistentGroupProtocolError,
    InvalidSessionTimeoutError,
    InvalidGroupIdError,
    GroupAuthorizationFailedError,
)


@dataclass(frozen=True)
class OutRecord:
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@dataclass
class Worker:
    """What a runner needs besides Kafka: settings, detector, metrics, health."""

    settings: StreamSettings
    detector: Detector
    metrics: StreamMetrics
    health: Health


def pipeline_config(settings: StreamSettings) -> PipelineConfig:
    """`PipelineConfig` from the settings."""
    f, d, w = settings.fetch, settings.decode, settings.worker
    return PipelineConfig(
        fetch=FetchLimits(
            allowed_hosts=tuple(f.allowed_hosts),
            file_roots=tuple(f.file_roots),
            allow_file=f.allow_file,
            max_bytes=f.max_bytes,
            inline_max_bytes=f.inline_max_bytes,
            timeout_s=f.timeout_s,
            attempts=f.attempts,
        ),
        decode=DecodeLimits(
            max_bytes=f.max_bytes, max_pixels=d.max_pixels, formats=frozenset(d.formats)
        ),
        dedupe_size=w.dedupe_size,
        infer_attempts=w.infer_attempts,
        infer_backoff_s=w.infer_backoff_s,
    )


async def wait_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when `stop` was set meanwhile."""
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


async def wait_for_model(worker: Worker, stop: asyncio.Event) -> ModelInfo | None:
    """Ask the detector what it serves, retrying until it answers or `stop`."""
    while not stop.is_set():
        try:
            info = await worker.detector.info()
        except TransientError as exc:
            worker.metrics.triton_up.set(0)
            logger.warning("detector not available yet: %s", exc)
            if await wait_or_stop(stop, worker.settings.worker.outage_poll_s):
                return None
            continue
        worker.metrics.triton_up.set(1)
        worker.metrics.set_model(info.versions, info.score_reference)
        return info
    return None


async def wait_for_broker(
    probe: Probe, bootstrap: str, poll_s: float, stop: asyncio.Event
) -> bool:
    """Call `probe` every `poll_s` until the broker answers; False if `stop` first.

    A worker that starts before its broker (a rollout, a broker restart) waits here,
    alive and not ready, instead of failing its clients' bootstrap and exiting into
    a crash loop whose back-off outlasts the broker's return.

    Args:
        probe: The broker probe (`stream.readiness.BrokerRoundTrip`: a metadata
            round trip with a deadline, so a frozen broker does not count as up).
        bootstrap: The bootstrap servers, for the log line.
        poll_s: Seconds between probes.
        stop: Set when the worker stops.
    """
    logged = False
    while not stop.is_set():
        if await probe():
            if logged:
                logger.info("broker answers; starting the Kafka clients")
            return True
        if not logged:
            logger.warning(
                "broker %s does not answer yet; waiting (probing every %.1f s)",
                bootstrap,
                poll_s,
            )
            logged = True
        if await wait_or_stop(stop, poll_s):
            return False
    return False


class Client(Protocol):
    """What `start_clients` needs of a Kafka client (aiokafka's producer, consumer)."""

    async def start(self) -> None: ...  # noqa: D102 - aiokafka's
    async def stop(self) -> None: ...  # noqa: D102 - aiokafka's


C = TypeVar("C", bound=tuple[Client, ...])


async def start_clients(
    clients: C,
    rebuild: Callable[[], C],
    probe: Probe,
    bootstrap: str,
    poll_s: float,
    stop: asyncio.Event,
) -> C | None:
    """Start `clients` in order once the broker answers; None if `stop` came first.

    The broker can go away between the probe's answer and the clients' bootstrap
    (aiokafka fails it within a second). An outage here stops all of them (a
    consumer that did start would keep its coordinator running) and, since an
    aiokafka consumer that started once cannot start again after its stop, builds
    fresh ones and waits for the broker again instead of ending the process.

    Args:
        clients: The clients to start first.
        rebuild: Fresh clients, configured as `clients`, for the next try.
        probe: The broker probe (see `wait_for_broker`).
        bootstrap: The bootstrap servers, for the log lines.
        poll_s: Seconds between tries.
        stop: Set when the process stops.

    Returns:
        The started clients (fresh ones after a failed try).

    Raises:
        FatalError: the broker refused for good (not `KafkaError.retriable`:
            authentication, authorisation); retrying would never end.
    """
    while await wait_for_broker(probe, bootstrap, poll_s, stop):
        try:
            for client in clients:
                await client.start()
        except KafkaError as exc:
            for client in clients:
                with contextlib.suppress(Exception):  # half started: stop what is
                    await client.stop()
            if not exc.retriable and not isinstance(exc, KafkaTimeoutError):
                raise FatalError(f"Kafka clients refused: {exc!r}") from exc
            logger.warning("Kafka clients did not start on %s (%r)", bootstrap, exc)
            clients = rebuild()
            if await wait_or_stop(stop, poll_s):
                return None
        else:
            return clients
    return None


async def build_pipeline(worker: Worker, stop: asyncio.Event) -> Pipeline | None:
    """A pipeline for what the detector serves (None when stopped first)."""
    info = await wait_for_model(worker, stop)
    if info is None:
        return None
    return Pipeline(worker.detector, info, pipeline_config(worker.settings))


async def process_until_done(
    worker: Worker,
    pipeline: Pipeline,
    batch: Sequence[Incoming],
    stop: asyncio.Event,
) -> list[Outcome] | None:
    """Run `pipeline.handle_batch` until it succeeds; None if stopped first.

    While the detector is down the circuit is open (`Health.circuit_open`); the
    caller must neither commit nor skip the batch.
    """
    while True:
        try:
            outcomes = await pipeline.handle_batch(batch)
        except TransientError as exc:
            logger.warning(
                "detector unavailable, batch of %d held: %s", len(batch), exc
            )
            worker.health.circuit_open = True
            worker.metrics.triton_up.set(0)
            cause = exc.__cause__ or exc
            worker.metrics.detector_failures.labels(type(cause).__name__).inc()
            if not await _until_ready(worker, stop):
                return None
            continue
        if worker.health.circuit_open:
            logger.info("detector back; resuming")
        worker.health.circuit_open = False
        worker.metrics.triton_up.set(1)
        return outcomes


async def _until_ready(worker: Worker, stop: asyncio.Event) -> bool:
    poll_s = worker.settings.worker.outage_poll_s
    while not await wait_or_stop(stop, poll_s):
        if await worker.detector.ready():
            return True
    return False


def encode(outcome: Outcome, kafka: KafkaSettings) -> OutRecord:
    """A verdict for the verdicts topic, or the DLQ record of a failure."""
    if isinstance(outcome, Failure):
        inc = outcome.incoming
        headers = outcome.headers().to_kafka()
        return OutRecord(kafka.dlq_topic, inc.key, inc.payload, headers)
    value = outcome.model_dump_json().encode()
    return OutRecord(kafka.verdicts_topic, outcome.image_id.encode(), value, [])


Send = Callable[[OutRecord], Awaitable["asyncio.Future[Any]"]]


async def publish(
    worker: Worker, outcomes: Sequence[Outcome], send: Send, stop: asyncio.Event
) -> bool:
    """Send every outcome and await the acks; retry the batch until delivered.

    Args:
        worker: Its settings encode the records; its metrics get the stage time.
        outcomes: One batch's verdicts and DLQ failures.
        send: The runner's producer call for one record; returns the ack future.
        stop: Set when the worker stops: a failing batch is then given up.

    Returns:
        True once every record is acknowledged; False if stopped first (then
        nothing of the batch may be committed).

    Raises:
        FatalError: the broker refused for good (not `KafkaError.retriable`:
            authorisation, record too large); retrying would never end.
    """
    delay = 0.5
    start = time.perf_counter()
    while True:
        try:
            acks = [await send(encode(o, worker.settings.kafka)) for o in outcomes]
            await asyncio.gather(*acks)
        except KafkaError as exc:
            # aiokafka's timeouts (no metadata, expired batch) are outages, not refusals
            if not exc.retriable and not isinstance(exc, KafkaTimeoutError):
                raise FatalError(f"publish refused: {exc!r}") from exc
            logger.warning("publish failed (%r); retrying the batch", exc)
            if stop.is_set():
                return False
            await asyncio.sleep(delay)
            delay = min(2 * delay, 5.0)
            continue
        seconds = time.perf_counter() - start
        worker.metrics.stage_seconds.labels("publish").observe(seconds)
        return True


async def step(
    worker: Worker,
    pipeline: Pipeline,
    batch: Sequence[Incoming],
    send: Send,
    stop: asyncio.Event,
) -> bool:
    """Process, publish and observe one batch: True once it is delivered.

    False means stopped first: nothing of the batch may be committed. Any exception
    is a bug or a refusal (`publish`), never a bad event (those are DLQ records):
    the runner stops without committing the batch.
    """
    outcomes = await process_until_done(worker, pipeline, batch, stop)
    if outcomes is None or not await publish(worker, outcomes, send, stop):
        return False
    worker.metrics.observe_batch(outcomes, [b.timestamp_ms for b in batch])
    return True


class PartitionConsumer(Protocol):
    """What `LagGauge` reads: aiokafka's consumer and faust's both provide it."""

    def assignment(self) -> Any:
        """The assigned topic-partitions."""

    def highwater(self, tp: Any) -> int | None:
        """The partition's last fetched highwater mark."""

    async def position(self, tp: Any) -> int | None:
        """The next offset this consumer reads."""


class LagGauge:
    """Keeps ``synthguard_consumer_lag_events`` current, at most once a second."""

    def __init__(self, metrics: StreamMetrics, every_s: float = 1.0) -> None:
        self.metrics, self.every_s = metrics, every_s
        self._at: float | None = None  # monotonic time can be near 0 after boot

    async def update(self, consumer: PartitionConsumer) -> None:
        """Set highwater minus position for every assigned partition."""
        now = time.monotonic()
        if self._at is not None and now - self._at < self.every_s:
            return
        self._at = now
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            position = await consumer.position(tp)
            if highwater is None or position is None:
                continue
            lag = max(0, highwater - position)
            self.metrics.lag.labels(tp.topic, str(tp.partition)).set(lag)
