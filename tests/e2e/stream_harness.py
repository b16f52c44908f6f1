"""Helpers for the stream end-to-end tests: topics per test, worker subprocesses,
events from image files, and reading verdicts / DLQ records / committed offsets."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream.dev.broker import create_topics
from stream.dev.produce import producer, upload_event
from stream.dev.testing import committed_offsets, read_topic
from stream.events import DeadLetterHeaders, UploadEvent, utc_now

REPO_ROOT = Path(__file__).resolve().parents[2]
PARTITIONS = 2


@dataclass
class StreamCase:
    """Unique topics and group for one test, and the worker's environment."""

    bootstrap: str
    triton_url: str
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    @property
    def uploads(self) -> str:
        return f"up.{self.tag}"

    @property
    def verdicts(self) -> str:
        return f"verdicts.{self.tag}"

    @property
    def dlq(self) -> str:
        return f"dlq.{self.tag}"

    @property
    def group(self) -> str:
        return f"g.{self.tag}"

    async def create_topics(self) -> None:
        await create_topics(
            self.bootstrap, [self.uploads, self.verdicts, self.dlq], PARTITIONS
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHGUARD_")}
        env.update(
            PYTHONPATH=str(REPO_ROOT),
            SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS=self.bootstrap,
            SYNTHGUARD_KAFKA__UPLOADS_TOPIC=self.uploads,
            SYNTHGUARD_KAFKA__VERDICTS_TOPIC=self.verdicts,
            SYNTHGUARD_KAFKA__DLQ_TOPIC=self.dlq,
            SYNTHGUARD_KAFKA__GROUP_ID=self.group,
            SYNTHGUARD_TRITON__URL=self.triton_url,
            SYNTHGUARD_TRITON__TIMEOUT_S="60",
            SYNTHGUARD_METRICS__PORT="0",
            SYNTHGUARD_WORKER__BATCH_MAX="4",
            SYNTHGUARD_WORKER__MAX_IN_FLIGHT="8",
            SYNTHGUARD_WORKER__OUTAGE_POLL_S="0.5",
            SYNTHGUARD_WORKER__INFER_BACKOFF_S="0.2",
            SYNTHGUARD_FETCH__INLINE_MAX_BYTES="200000",
        )
        env.update(extra)
        return env

    async def produce(self, payloads: list[bytes]) -> None:
        prod = producer(self.bootstrap)
        await prod.start()
        try:
            for i, payload in enumerate(payloads):
                await (await prod.send(self.uploads, payload, key=b"%d" % i))
        finally:
            await prod.stop()

    async def verdicts_read(self, n: int, timeout_s: float) -> list[dict[str, Any]]:
        recs = await read_topic(
            self.bootstrap, self.verdicts, PARTITIONS, lambda r: len(r) >= n, timeout_s
        )
        return [json.loads(r.value) for r in recs]

    async def ids_verdicted(self, ids: set[str], timeout_s: float) -> Counter[str]:
        """Read until every id has a verdict (or timeout); counts per id."""

        def seen(recs: list[Any]) -> bool:
            return ids <= {json.loads(r.value)["image_id"] for r in recs}

        recs = await read_topic(
            self.bootstrap, self.verdicts, PARTITIONS, seen, timeout_s
        )
        return Counter(json.loads(r.value)["image_id"] for r in recs)

    async def dlq_read(
        self, n: int, timeout_s: float
    ) -> list[tuple[bytes, DeadLetterHeaders]]:
        recs = await read_topic(
            self.bootstrap, self.dlq, PARTITIONS, lambda r: len(r) >= n, timeout_s
        )
        return [(r.value, DeadLetterHeaders.from_kafka(list(r.headers))) for r in recs]

    async def committed_total_reaches(
        self, expected: int, timeout_s: float = 10.0
    ) -> int:
        """Poll the committed total until it equals `expected` (or timeout)."""
        total = -1
        for _ in range(int(timeout_s / 0.25)):
            total = await self.committed_total()
            if total == expected:
                break
            await asyncio.sleep(0.25)
        return total

    async def committed_total(self) -> int:
        offsets = await committed_offsets(
            self.bootstrap, self.group, self.uploads, PARTITIONS
        )
        return sum(v or 0 for v in offsets.values())


class WorkerProcess:
    """``python -m stream worker`` as a subprocess (stdout/stderr to files)."""

    def __init__(self, runner: str, env: dict[str, str], log_dir: Path) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        n = len(list(log_dir.glob("worker-*.err")))
        self.out = log_dir / f"worker-{n}.out"
        self.err = log_dir / f"worker-{n}.err"
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream", "worker", "--runner", runner],
                env=env, stdout=out, stderr=err, cwd=REPO_ROOT,
            )  # fmt: skip

    async def endpoints(self, timeout_s: float = 60.0) -> dict[str, str]:
        """The JSON line the worker prints once its metrics endpoint is up."""
        for _ in range(int(timeout_s / 0.1)):
            for line in self.out.read_text().splitlines():
                if line.startswith("{"):
                    return dict(json.loads(line))
            if self.proc.poll() is not None:
                break
            await asyncio.sleep(0.1)
        raise AssertionError(f"worker did not announce; stderr:\n{self.log_tail()}")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout_s: float = 60.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout_s)

    def ensure_stopped(self) -> None:
        if self.proc.poll() is None:
            self.kill()

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.err.read_text(errors="replace").splitlines()[-lines:])


@contextlib.asynccontextmanager
async def forwarder(listen_port: int, target_port: int) -> AsyncIterator[None]:
    """Forward TCP connections from 127.0.0.1:`listen_port` to `target_port`.

    A bootstrap address that comes up late: Kafka clients bootstrap through it, then
    connect to the broker's advertised address (its own port), not through here.
    """

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def serve(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            tr, tw = await asyncio.open_connection("127.0.0.1", target_port)
        except OSError:
            w.close()
            return
        await asyncio.gather(pipe(r, tw), pipe(tr, w))

    server = await asyncio.start_server(serve, "127.0.0.1", listen_port)
    try:
        yield
    finally:
        server.close()


def file_events(paths: list[Path], prefix: str) -> tuple[list[bytes], dict[str, Path]]:
    """Upload events with file:// URIs; ids ``<prefix><i>``."""
    payloads, ids = [], {}
    for i, path in enumerate(paths):
        event = upload_event(path, mode="uri", image_id=f"{prefix}{i}")
        payloads.append(event.model_dump_json().encode())
        ids[event.image_id] = path
    return payloads, ids


def inline_event(image_id: str, data: bytes) -> bytes:
    return (
        UploadEvent(
            image_id=image_id,
            data_b64=base64.b64encode(data).decode(),
            uploaded_at=utc_now(),
        )
        .model_dump_json()
        .encode()
    )


def uri_event(image_id: str, uri: str) -> bytes:
    return (
        UploadEvent(image_id=image_id, uri=uri, uploaded_at=utc_now())
        .model_dump_json()
        .encode()
    )
