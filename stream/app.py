"""Composition root: wire settings, detector, metrics, health and a runner.

`run_worker` is what ``synthguard worker`` runs: it blocks until SIGTERM/SIGINT and
then drains. `serve` runs the aiokafka runner inside an existing event loop (the
``up`` and ``stream-demo`` commands, tests).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from stream.health import Health, HealthServer, announce
from stream.metrics import StreamMetrics
from stream.ports import Detector
from stream.readiness import BrokerRoundTrip, close_probe
from stream.runners.common import Worker
from stream.settings import StreamSettings
from stream.triton_detector import TritonDetector

logger = logging.getLogger(__name__)


def make_worker(
    settings: StreamSettings,
    registry: CollectorRegistry | None = None,
    detector: Detector | None = None,
) -> Worker:
    """A `Worker` whose readiness probes the broker and the detector.

    The detector defaults to `TritonDetector`, safe to build outside the runner's
    loop: its gRPC channel opens on the first call, on that loop, and readiness
    stays false until Triton answers. The broker counts as up after a metadata
    round trip within a deadline (`BrokerRoundTrip`), not a mere TCP connect,
    which a frozen broker still accepts.
    """
    m = settings.metrics
    metrics = StreamMetrics(
        registry or CollectorRegistry(), m.drift_window, m.drift_max_tenants
    )
    detector = detector or TritonDetector(settings.triton)
    health = Health(broker=BrokerRoundTrip(settings.kafka), detector=detector.ready)
    health.observers.append(lambda ok: metrics.ready.set(1 if ok else 0))
    return Worker(settings, detector, metrics, health)


async def serve(
    settings: StreamSettings,
    stop: asyncio.Event,
    worker: Worker | None = None,
    on_url: Callable[[str], None] | None = None,
) -> None:
    """Run the aiokafka runner (and the metrics endpoint) until `stop` is set."""
    from stream.runners.aiokafka_runner import AioKafkaRunner

    worker = worker or make_worker(settings)
    server = None
    if settings.metrics.enabled:
        m = settings.metrics
        server = HealthServer(worker.metrics.registry, worker.health, m.host, m.port)
        url = await server.start()
        if on_url is not None:
            on_url(url)
    try:
        await AioKafkaRunner(worker).run(stop)
    finally:
        if server is not None:
            await server.stop()
        await close_probe(worker.health.broker)
        await worker.detector.close()


async def _main(settings: StreamSettings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await serve(settings, stop, on_url=announce)


def run_worker(settings: StreamSettings) -> int:
    """Run the configured runner until SIGTERM/SIGINT; returns the exit code."""
    logger.info(
        "worker (%s): kafka %s, triton %s, topic %s",
        settings.runner,
        settings.kafka.bootstrap_servers,
        settings.triton.url,
        settings.kafka.uploads_topic,
    )
    if settings.runner == "faust":
        from stream.runners.faust_runner import FaustRunner

        FaustRunner(settings, make_worker(settings)).run()
        return 0
    asyncio.run(_main(settings))
    return 0
