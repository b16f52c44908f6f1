"""Adapter: the broker readiness probe: a metadata round trip with a deadline.

A TCP connect is not enough: a frozen broker (SIGSTOP, a hung JVM) still completes
the kernel's handshake. The probe sends a Metadata request on its own admin client
and counts the broker as up only when the answer comes within ``timeout_s``. A
success is reused for ``fresh_s``, so ``/readyz`` and ``/metrics`` scrapes add at most
one request per ``fresh_s``; readiness therefore reflects the broker's state within
``fresh_s + timeout_s``. A node that is not ready yet (a broker just started) is
asked again within the deadline rather than counted as down. Only changes of state
are logged (the first failure as a warning, the recovery as info; repeated failures
at debug), because probes run on every scrape and every outage poll.
"""

from __future__ import annotations

import asyncio
import logging
import time

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError, NodeNotReadyError

from stream.kafka_security import aiokafka_security
from stream.settings import KafkaSettings

logger = logging.getLogger(__name__)
_NOT_READY_RETRY_S = 0.05


class BrokerRoundTrip:
    """A `stream.health.Probe`: True after a recent successful metadata round trip.

    Args:
        kafka: Bootstrap servers and security settings.
        timeout_s: Deadline of one round trip (connect included).
        fresh_s: How long a success stands before the next probe asks again.
    """

    def __init__(
        self, kafka: KafkaSettings, timeout_s: float = 2.0, fresh_s: float = 2.0
    ) -> None:
        self.kafka, self.timeout_s, self.fresh_s = kafka, timeout_s, fresh_s
        self._admin: AIOKafkaAdminClient | None = None
        self._ok_at: float | None = None
        self._failing = False

    async def __call__(self) -> bool:
        """Whether the broker answered a metadata request recently."""
        now = time.monotonic()
        if self._ok_at is not None and now - self._ok_at < self.fresh_s:
            return True
        try:
            await asyncio.wait_for(self._round_trip(), self.timeout_s)
        except (TimeoutError, KafkaError, OSError) as exc:
            log = logger.debug if self._failing else logger.warning
            log("broker round trip failed: %r", exc)
            self._ok_at, self._failing = None, True
            await self.close()
            return False
        if self._failing:
            logger.info("broker round trip succeeds again")
        self._ok_at, self._failing = time.monotonic(), False
        return True

    async def _round_trip(self) -> None:
        if self._admin is None:
            k = self.kafka
            self._admin = AIOKafkaAdminClient(
                bootstrap_servers=k.bootstrap_servers,
                request_timeout_ms=int(self.timeout_s * 1000),
                **aiokafka_security(k),
            )
            await self._admin.start()
        while True:
            try:
                await self._admin.describe_cluster()
            except NodeNotReadyError:
                # a broker that has just started can answer the bootstrap before its
                # metadata lists it (seen with Tansu): ask again within the deadline
                await asyncio.sleep(_NOT_READY_RETRY_S)
            else:
                return

    async def close(self) -> None:
        """Close the admin client (a new one is made on the next probe)."""
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except (KafkaError, OSError) as exc:
                logger.debug("closing the probe's admin client: %r", exc)


async def close_probe(probe: object) -> None:
    """Close `probe`'s client if it is a `BrokerRoundTrip` (at worker shutdown)."""
    if isinstance(probe, BrokerRoundTrip):
        await probe.close()
