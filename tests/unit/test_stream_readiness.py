from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest
from aiokafka.errors import NodeNotReadyError

from stream.readiness import BrokerRoundTrip
from stream.settings import KafkaSettings


@pytest.fixture
def silent_port() -> Iterator[int]:
    # accepts TCP connections (the kernel's backlog) but never answers: a frozen broker
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


async def test_broker_probe_fails_within_its_deadline_on_a_silent_broker(
    silent_port: int,
) -> None:
    probe = BrokerRoundTrip(
        KafkaSettings(bootstrap_servers=f"127.0.0.1:{silent_port}"), timeout_s=0.5
    )
    ok = await asyncio.wait_for(probe(), 3)
    assert ok is False
    await probe.close()


async def test_broker_probe_reuses_a_recent_success() -> None:
    probe = BrokerRoundTrip(KafkaSettings(), fresh_s=60)
    calls: list[int] = []

    async def answered() -> None:
        calls.append(1)

    probe._round_trip = answered  # type: ignore[method-assign]
    assert await probe()
    assert await probe()
    assert calls == [1]


async def test_broker_probe_logs_changes_of_state_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    probe = BrokerRoundTrip(KafkaSettings(), fresh_s=0)
    answers = iter([False, False, False, True, True, False])

    async def round_trip() -> None:
        if not next(answers):
            raise OSError("connection refused")

    probe._round_trip = round_trip  # type: ignore[method-assign]
    with caplog.at_level(logging.DEBUG, logger="stream.readiness"):
        seen = [await probe() for _ in range(6)]
    assert seen == [False, False, False, True, True, False]
    levels = [(r.levelname, r.getMessage()[:22]) for r in caplog.records]
    assert levels == [
        ("WARNING", "broker round trip fail"),
        ("DEBUG", "broker round trip fail"),
        ("DEBUG", "broker round trip fail"),
        ("INFO", "broker round trip succ"),
        ("WARNING", "broker round trip fail"),
    ]


class _Admin:
    """Stands in for the probe's admin client: `not_ready` NodeNotReadyErrors first."""

    def __init__(self, not_ready: int) -> None:
        self.not_ready, self.calls = not_ready, 0

    async def describe_cluster(self) -> None:
        self.calls += 1
        if self.calls <= self.not_ready:
            raise NodeNotReadyError("node id None")

    async def close(self) -> None:
        pass


async def test_broker_probe_asks_again_while_a_fresh_broker_is_not_ready() -> None:
    probe = BrokerRoundTrip(KafkaSettings(), timeout_s=2.0)
    admin = _Admin(not_ready=3)
    probe._admin = admin  # type: ignore[assignment]
    # before, the first NodeNotReadyError counted the broker as down (and closing the
    # half-connected client logged an unclosed-connection error)
    assert await probe()
    assert admin.calls == 4


async def test_broker_probe_still_fails_within_its_deadline_if_never_ready() -> None:
    probe = BrokerRoundTrip(KafkaSettings(), timeout_s=0.3)
    probe._admin = _Admin(not_ready=10**6)  # type: ignore[assignment]
    assert not await asyncio.wait_for(probe(), 3.0)
