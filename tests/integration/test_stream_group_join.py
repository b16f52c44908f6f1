"""Both runners join one consumer group and serve their health endpoint from
process start. Real Tansu broker; Triton a closed port. (That they fail loudly when
they cannot join needs a real Triton first: `tests/e2e/test_stream_e2e.py`.)
"""

from __future__ import annotations

import socket
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from worker_process import ensure_stopped, start_worker, wait_announced, worker_env

from stream.dev.broker import TansuBroker, create_topics, locate_tansu
from stream.errors import FatalError
from stream.runners.common import ASSIGNORS
from stream.settings import KafkaSettings

RUNNERS = ("aiokafka", "faust")


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    try:
        locate_tansu()
    except FatalError as exc:
        pytest.skip(str(exc))
    with TansuBroker() as b:
        yield b


async def _member(bootstrap: str, env: dict[str, str], assignor: Any) -> Any:
    topic, group = (
        env["SYNTHGUARD_KAFKA__UPLOADS_TOPIC"],
        env["SYNTHGUARD_KAFKA__GROUP_ID"],
    )
    await create_topics(bootstrap, [topic], 2)
    member = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group,
        partition_assignment_strategy=(assignor,), session_timeout_ms=10_000,
        heartbeat_interval_ms=500,
    )  # fmt: skip
    await member.start()
    while len(member.assignment()) < 2:
        await member.getmany(timeout_ms=200)
    return member


@pytest.fixture
async def closing() -> AsyncIterator[list[Any]]:
    members: list[Any] = []
    yield members
    for m in members:
        await m.stop()


async def test_faust_shares_a_group_with_the_aiokafka_protocol(
    broker: TansuBroker, tmp_path: Path, closing: list[Any]
) -> None:
    env = worker_env(broker.bootstrap, tmp_path)
    default = ASSIGNORS[KafkaSettings().partition_assignor]
    member = await _member(broker.bootstrap, env, default)
    closing.append(member)
    proc = start_worker("faust", env)
    try:
        deadline = time.monotonic() + 45
        while len(member.assignment()) == 2 and time.monotonic() < deadline:
            await member.getmany(timeout_ms=200)
        assert len(member.assignment()) == 1, "faust never joined the group"
    finally:
        ensure_stopped(proc)


@pytest.fixture
def silent_broker() -> Iterator[str]:
    """A bootstrap address that accepts connections and never answers.

    A broker that is not up yet, or frozen: connections hang rather than fail. (A
    closed port that opens later is `tests/e2e`'s, with a real Triton.)
    """
    with socket.create_server(("127.0.0.1", 0)) as server:  # listens, never accepts
        yield f"127.0.0.1:{server.getsockname()[1]}"


@pytest.mark.parametrize("runner", RUNNERS)
def test_health_endpoint_up_before_the_broker_answers(
    tmp_path: Path, runner: str, silent_broker: str
) -> None:
    proc = start_worker(runner, worker_env(silent_broker, tmp_path))
    try:
        ready = wait_announced(proc, timeout_s=60)
        healthz = ready.replace("/readyz", "/healthz")
        # a liveness bound, generous for faust's start on 2 loaded cores
        with urllib.request.urlopen(healthz, timeout=30) as resp:  # noqa: S310 - loopback
            assert resp.status == 200
    finally:
        ensure_stopped(proc)
