from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator

import pytest

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
