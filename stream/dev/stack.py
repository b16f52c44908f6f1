"""Application: the local stack: Tansu, tritonserver and the worker, on loopback.

Used by ``synthguard up`` (keeps running) and ``synthguard stream-demo``. Every port
is a free one on 127.0.0.1; the worker runs in this process (aiokafka runner).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from types import TracebackType
from typing import Self

from serving.triton.server import ServerOptions, TritonServer
from stream.app import make_worker, serve
from stream.dev.broker import TansuBroker, create_topics
from stream.errors import FatalError
from stream.runners.common import Worker
from stream.settings import StreamSettings

logger = logging.getLogger(__name__)


def stack_settings(
    base: StreamSettings, bootstrap: str, triton_url: str
) -> StreamSettings:
    """`base` pointed at this stack's broker and Triton, metrics on a free port."""
    return base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": bootstrap}),
            "triton": base.triton.model_copy(update={"url": triton_url}),
            "metrics": base.metrics.model_copy(update={"port": 0}),
        }
    )


class Stack:
    """Broker + Triton (context manager, blocking start) and the worker (async).

    Args:
        repo: An exported model repository.
        base: Settings whose Kafka/Triton addresses are replaced by the stack's.
        work_dir: Logs of the broker and Triton.
    """

    def __init__(self, repo: Path, base: StreamSettings, work_dir: Path) -> None:
        self.broker = TansuBroker(log_path=work_dir / "tansu.log")
        self.triton = TritonServer(repo, ServerOptions(), work_dir=work_dir / "triton")
        self.base = base
        self.settings = base
        self.metrics_url: str | None = None
        self.worker: Worker | None = None
        self._stop = asyncio.Event()
        self._url_ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> Self:
        self.broker.start()
        try:
            self.triton.start()
        except BaseException:
            self.broker.stop()
            raise
        self.settings = stack_settings(
            self.base, self.broker.bootstrap, self.triton.grpc_url
        )
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.triton.stop()
        self.broker.stop()

    async def start_worker(self) -> None:
        """Create the topics and start the worker task."""
        k = self.settings.kafka
        topics = [k.uploads_topic, k.verdicts_topic, k.dlq_topic]
        await create_topics(k.bootstrap_servers, topics, k.partitions)
        self.worker = make_worker(self.settings)
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(
            serve(self.settings, self._stop, self.worker, on_url=self._on_url)
        )

    def _on_url(self, url: str) -> None:
        self.metrics_url = url
        self._url_ready.set()

    async def wait_serving(self, timeout_s: float = 60.0) -> None:
        """Wait until the worker's metrics endpoint is up.

        Raises:
            FatalError: the worker failed or did not come up in time.
        """
        try:
            await asyncio.wait_for(self._url_ready.wait(), timeout_s)
        except TimeoutError as exc:
            raise FatalError(f"worker not serving after {timeout_s} s") from exc
        if self.worker_failed is not None:
            raise FatalError(f"worker failed: {self.worker_failed!r}")

    async def stop_worker(self) -> None:
        """Ask the worker to drain and wait for it."""
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Wait until the worker's readiness holds (group joined, Triton up).

        Raises:
            FatalError: the worker failed or was not ready in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        await self.wait_serving(timeout_s)
        while self.worker is None or not await self.worker.health.ready():
            if self.worker_failed is not None or loop.time() > deadline:
                raise FatalError(f"worker not ready: {self.worker_failed!r}")
            await asyncio.sleep(0.2)

    @property
    def worker_failed(self) -> BaseException | None:
        """The worker task's exception, if it ended with one."""
        task = self._task
        if task is None or not task.done() or task.cancelled():
            return None
        return task.exception()

    def endpoints(self) -> dict[str, str]:
        """Addresses of everything running, for humans and scripts."""
        k = self.settings.kafka
        return {
            "bootstrap": self.broker.bootstrap,
            "triton_grpc": self.triton.grpc_url,
            "triton_metrics": self.triton.metrics_url,
            "worker_metrics": f"{self.metrics_url}/metrics",
            "worker_ready": f"{self.metrics_url}/readyz",
            "uploads_topic": k.uploads_topic,
            "verdicts_topic": k.verdicts_topic,
            "dlq_topic": k.dlq_topic,
            "broker_log": str(self.broker.log_path),
            "triton_log": str(self.triton.log_path),
        }
