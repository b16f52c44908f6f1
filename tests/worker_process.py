"""A ``python -m stream worker`` subprocess for integration tests (real broker)."""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
import uuid
from pathlib import Path

from serving.local_process import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]


def worker_env(bootstrap: str, tmp: Path, **extra: str) -> dict[str, str]:
    """Environment for one worker: unique topic and group, Triton a closed port."""
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
    env.update(extra)
    return env


def start_worker(runner: str, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start the worker; stdout is a pipe (the endpoint announcement)."""
    return subprocess.Popen(
        [sys.executable, "-m", "stream", "worker", "--runner", runner],
        env=env, cwd=REPO_ROOT, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def wait_announced(proc: subprocess.Popen[str], timeout_s: float = 60) -> str:
    """The ``/readyz`` URL from the worker's JSON line (the endpoint is up)."""
    deadline = time.monotonic() + timeout_s
    assert proc.stdout is not None
    while (left := deadline - time.monotonic()) > 0:
        if not select.select([proc.stdout], [], [], left)[0]:
            break  # nothing printed in time
        line = proc.stdout.readline()
        if line.startswith("{"):
            return str(json.loads(line)["ready"])
        if not line and proc.poll() is not None:
            break
    raise AssertionError("worker did not announce its endpoint")


def ensure_stopped(proc: subprocess.Popen[str]) -> None:
    """Kill the worker if it still runs."""
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
