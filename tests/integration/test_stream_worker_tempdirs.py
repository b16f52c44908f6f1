"""A worker process stopped by SIGTERM leaves nothing in the system temp folder.

Real Tansu broker; Triton is a closed port (the worker waits for the model, which is
enough to exercise start-up and a clean stop).
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from worker_process import ensure_stopped, start_worker, wait_announced, worker_env

from stream.dev.broker import TansuBroker, locate_tansu
from stream.errors import FatalError


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    try:
        locate_tansu()
    except FatalError as exc:
        pytest.skip(str(exc))
    with TansuBroker() as b:
        yield b


@pytest.mark.parametrize("runner", ["aiokafka", "faust"])
def test_worker_leaves_no_temp_dir_after_sigterm(
    broker: TansuBroker, tmp_path: Path, runner: str
) -> None:
    proc = start_worker(runner, worker_env(broker.bootstrap, tmp_path))
    try:
        wait_announced(proc)
        assert list(tmp_path.glob("synthguard-*")) or runner == "aiokafka"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        ensure_stopped(proc)
    assert list(tmp_path.glob("synthguard-*")) == []
