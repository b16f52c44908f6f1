"""Adapter: the worker's HTTP endpoint: ``/metrics``, ``/healthz``, ``/readyz``.

``/healthz`` answers 200 while the event loop runs and the runner's consumer is alive
(503 with the reason once a runner has declared it dead, e.g. a fatal group error,
in the moment before the process exits). ``/readyz`` answers 200 only when
the broker probe succeeds (the worker's: a recent metadata round trip, see
`stream.readiness`) **and** the detector answers **and** the runner
has not opened its circuit (Triton outage); otherwise 503 with the reasons as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

logger = logging.getLogger(__name__)
Probe = Callable[[], Awaitable[bool]]


def first_bootstrap(bootstrap_servers: str) -> tuple[str, int]:
    """Host and port of the first ``host:port`` in a bootstrap list."""
    first = bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def tcp_probe(host: str, port: int, timeout_s: float = 1.0) -> Probe:
    """A probe that succeeds when ``host:port`` accepts a TCP connection."""

    async def probe() -> bool:
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, port), timeout_s
            )
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True

    return probe


@dataclass
class Health:
    """Readiness state shared by the runner and the HTTP endpoint.

    Attributes:
        broker: Probe for the broker.
        detector: Probe for the detector (Triton).
        circuit_open: Set by the runner while it waits out a detector outage.
        started: Set once the runner consumes.
        dead: Why the runner's consumer is dead (liveness fails); None while alive.
        reasons: Why the last `ready` call said no.
        observers: Called with each `ready` result (the readiness gauge).
    """

    broker: Probe
    detector: Probe
    circuit_open: bool = False
    started: bool = False
    dead: str | None = None
    reasons: list[str] = field(default_factory=list)
    observers: list[Callable[[bool], None]] = field(default_factory=list)

    async def ready(self) -> bool:
        """Whether the worker can make progress now; `reasons` says why not."""
        reasons = []
        if not self.started:
            reasons.append("runner not started")
        if self.circuit_open:
            reasons.append("detector circuit open")
        broker_ok, detector_ok = await asyncio.gather(self.broker(), self.detector())
        if not broker_ok:
            reasons.append("broker unreachable")
        if not detector_ok:
            reasons.append("detector unreachable")
        self.reasons = reasons
        for observe in self.observers:
            observe(not reasons)
        return not reasons


def build_app(registry: CollectorRegistry, health: Health) -> web.Application:
    """The aiohttp application with the three routes."""

    async def metrics(_request: web.Request) -> web.Response:
        await health.ready()  # refreshes the readiness gauge for this scrape
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_request: web.Request) -> web.Response:
        if health.dead is not None:
            return web.json_response({"status": health.dead}, status=503)
        return web.json_response({"status": "ok"})

    async def readyz(_request: web.Request) -> web.Response:
        ok = await health.ready()
        status = 200 if ok else 503
        return web.json_response(
            {"ready": ok, "reasons": health.reasons}, status=status
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


class HealthServer:
    """Runs `build_app` on ``host:port`` (port 0: a free one) until `stop`."""

    def __init__(
        self, registry: CollectorRegistry, health: Health, host: str, port: int
    ) -> None:
        self._runner = web.AppRunner(build_app(registry, health), access_log=None)
        self.host, self.port = host, port

    async def start(self) -> str:
        """Start serving; returns the base URL."""
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        url = f"http://{self.host}:{self.port}"
        logger.info("metrics and health on %s", url)
        return url

    async def stop(self) -> None:
        """Stop serving."""
        await self._runner.cleanup()


def announce(url: str) -> None:
    """Write the endpoint URLs as one JSON line on stdout (for scripts and tests)."""
    doc = {"metrics": f"{url}/metrics", "ready": f"{url}/readyz"}
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()
