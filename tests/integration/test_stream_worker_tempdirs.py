"""A worker process stopped by SIGTERM leaves nothing in the system temp folder.

Real Tansu broker; Triton is a closed port (the worker waits for the model, which is
enough to exercise start-up and a clean stop).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.local_process import free_port
from stream.broker import TansuBroker, locate_tansu
from stream.errors import FatalError

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def broker() -> Iterator[TansuBroker]:
    try:
        locate_tansu()
    except FatalError as exc:
        pytest.skip(str(exc))
    with TansuBroker() as b:
        yield b


def _env(bootstrap: str, tmp: Path) -> dict[str, str]:
    tag = uuid.uuid4().hex[:8]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHGUARD_")}
    env.update(
        TMPDIR=str(tmp),
        PYTHONPATH=str(REPO_ROOT),
        SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        SYNTHGUARD_KAFKA__UPLOADS_TOPIC=f"up.{tag}",
        SYNTHGUARD_KAFKA__GROUP_ID=f"g.{tag}",
        SYNTHGUARD_TRITON__URL=f"127.0.0.1:{free_port()}",
        SYNTHGUARD_METRICS__PORT="0",
    )
    return env


def _wait_announced(proc: subprocess.Popen[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("{"):
            json.loads(line)
            return
        if not line and proc.poll() is not None:
            break
    raise AssertionError("worker did not announce its endpoint")


@pytest.mark.parametrize("runner", ["aiokafka", "faust"])
def test_worker_leaves_no_temp_dir_after_sigterm(
    broker: TansuBroker, tmp_path: Path, runner: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--runner", runner],
        env=_env(broker.bootstrap, tmp_path), cwd=REPO_ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_announced(proc)
        assert list(tmp_path.glob("synthguard-*")) or runner == "aiokafka"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert list(tmp_path.glob("synthguard-*")) == []
