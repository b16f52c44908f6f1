"""Runner: ``synthguard learner``, the feedback topic into the feedback kNN bank.

Its own consumer group (``synthguard-learner``) on the feedback topic, auto-commit
off. Per poll: every record through `stream.learner.Learner` in partition order, bad
ones to the feedback DLQ (acked), then a durable bank checkpoint, and only then the
offset commit, so a crash at any point redelivers records the checkpoint already
holds (skipped as stale) and never loses one it does not. An unavailable encoder is
retried with backoff until it answers or the learner is stopped (then nothing of the
poll is checkpointed or committed). A broker that does not answer at start is waited
for (`common.start_clients`), as the workers do.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from prometheus_client import CollectorRegistry

from serving.errors import ArtifactMismatchError
from serving.feedback_bank import Applied, FeedbackBank, bank_geometry
from stream.errors import FatalError, TransientError
from stream.fetch import Fetcher
from stream.health import Health, HealthServer, announce
from stream.learner import Learner, LearnerMetrics, ReviewerRateLimit
from stream.readiness import BrokerRoundTrip, close_probe
from stream.records import Failure, Incoming
from stream.runners.aiokafka_runner import incoming
from stream.runners.clients import consumer_options
from stream.runners.clients import producer as kafka_producer
from stream.runners.common import pipeline_config, start_clients
from stream.settings import LearnerSettings, StreamSettings
from stream.triton_detector import TritonRowEncoder

logger = logging.getLogger(__name__)
_BACKOFF_MAX_S = 5.0


def build_learner(
    settings: StreamSettings, registry: CollectorRegistry
) -> tuple[Learner, TritonRowEncoder]:
    """The learner on the checkpointed bank, with the worker's fetch/decode limits.

    Raises:
        FatalError: no usable artifact manifest or kNN head.
        ArtifactMismatchError: a checkpoint of another width or a damaged one.
    """
    ls = settings.learner
    try:
        geometry = bank_geometry(ls.artifacts_dir)
    except ArtifactMismatchError as exc:
        raise FatalError(f"learner artifacts: {exc}") from exc
    view = geometry.view
    encoder = TritonRowEncoder(settings.triton, geometry.layout, view)
    limits = pipeline_config(settings)  # the worker's fetch and decode limits
    bank = FeedbackBank.open(ls.bank_dir, view.dim, ls.max_rows)
    limit = ReviewerRateLimit(ls.reviewer_max_events, int(ls.reviewer_window_s * 1000))
    limit.restore(bank.admission)
    learner = Learner(
        bank=bank,
        encoder=encoder,
        policy=Learner.policy_of(geometry.policy),
        limit=limit,
        metrics=LearnerMetrics(registry),
        fetcher=Fetcher(limits.fetch),
        decode=limits.decode,
    )
    return learner, encoder


async def serve_learner(settings: StreamSettings, stop: asyncio.Event) -> None:
    """Consume feedback until `stop` is set (see the module doc)."""
    k, ls = settings.kafka, settings.learner
    registry = CollectorRegistry()
    learner, encoder = build_learner(settings, registry)

    def clients() -> tuple[AIOKafkaConsumer, AIOKafkaProducer]:
        opts = consumer_options(k, ls.group_id)
        return AIOKafkaConsumer(ls.feedback_topic, **opts), kafka_producer(k)

    health = Health(broker=BrokerRoundTrip(k), detector=encoder.ready)
    server = None
    if settings.metrics.enabled:
        m = settings.metrics
        server = HealthServer(registry, health, m.host, m.port)
        announce(await server.start())
    try:
        poll_s = settings.worker.outage_poll_s
        started = await start_clients(
            clients(), clients, health.broker, k.bootstrap_servers, poll_s, stop
        )
        if started is not None:
            await _consume(learner, *started, health, ls, stop)
    finally:
        await learner.fetcher.close()
        await encoder.close()
        await close_probe(health.broker)
        if server is not None:
            await server.stop()


async def _consume(
    learner: Learner,
    consumer: AIOKafkaConsumer,
    producer: AIOKafkaProducer,
    health: Health,
    ls: LearnerSettings,
    stop: asyncio.Event,
) -> None:
    """Poll, apply, checkpoint and commit until `stop` (started clients, stopped after)."""
    health.started = True
    try:
        while not stop.is_set():
            batches = await consumer.getmany(
                timeout_ms=500, max_records=ls.poll_max_records
            )
            if batches and not await _apply(learner, producer, batches, ls, stop):
                break
            if batches:
                await consumer.commit(
                    {tp: recs[-1].offset + 1 for tp, recs in batches.items()}
                )
    finally:
        await consumer.stop()
        await producer.stop()


async def _apply(
    learner: Learner,
    producer: AIOKafkaProducer,
    batches: dict[Any, list[Any]],
    ls: LearnerSettings,
    stop: asyncio.Event,
) -> bool:
    """Apply a poll, DLQ its bad records, checkpoint; False when stopped first."""
    sends = []
    for records in batches.values():
        for record in records:
            inc = incoming(record)
            outcome = await _handle_retrying(learner, inc, stop)
            if outcome is None:
                return False
            if isinstance(outcome, Failure):
                headers = outcome.headers().to_kafka()
                sends.append(
                    await producer.send(
                        ls.dlq_topic, inc.payload, inc.key, headers=headers
                    )
                )
    await asyncio.gather(*sends)
    version = await asyncio.to_thread(learner.checkpoint, ls.bank_dir)
    logger.info("feedback bank %s: %s rows", version, len(learner.bank))
    return True


async def _handle_retrying(
    learner: Learner, inc: Incoming, stop: asyncio.Event
) -> Applied | Failure | None:
    delay = 0.2
    while not stop.is_set():
        try:
            return await learner.handle(inc)
        except TransientError as exc:
            logger.warning("encoder unavailable, retrying in %.1f s: %s", delay, exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _BACKOFF_MAX_S)
    return None


def run_learner(settings: StreamSettings) -> int:
    """Run the learner until SIGTERM/SIGINT; returns the exit code."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve_learner(settings, stop)

    logger.info(
        "learner: kafka %s, triton %s, topic %s, bank %s",
        settings.kafka.bootstrap_servers,
        settings.triton.url,
        settings.learner.feedback_topic,
        settings.learner.bank_dir,
    )
    asyncio.run(main())
    return 0
