"""Harness: broker, tritonserver and workers as separate processes, for fault runs.

Used by ``bench/chaos.py`` and ``bench/hostile.py`` (and the hostile-input
integration test). Everything binds 127.0.0.1 on free ports. The worker is
``python -m stream.worker_main`` (the container's entry point) with its settings in
``SYNTHGUARD_*``; its peak RSS comes from ``/proc/<pid>/status`` (``VmHWM``, reset
through ``clear_refs``), read while it lives (sampled, and just before a kill). An
`Answers` reader follows the verdicts and DLQ topics and stamps every arrival.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from serving.triton.server import ServerOptions, TritonServer
from stream.dev.broker import TansuBroker, create_topics
from stream.dev.produce import producer
from stream.events import DeadLetterHeaders

ROOT = Path(__file__).resolve().parents[1]


def tiny_repo(work: Path) -> Path:
    """A Triton repository exported from the tiny-profile artifacts (built once).

    The artifacts are the ones ``synthguard stream-demo --tiny`` trains
    (`serving.jobs.ensure_demo_artifacts`), under ``$SYNTHGUARD_HOME`` (default ``.synthguard``).
    """
    from serving.jobs import ensure_demo_artifacts
    from serving.settings import ServingSettings
    from stream.dev.assets import export_repo

    artifacts = ensure_demo_artifacts(ServingSettings(), tiny=True, progress=False)
    return export_repo(artifacts, work / "model_repository")


def tiny_bench_images() -> list[Path]:
    """Every image file of the tiny benchmark (real and generated)."""
    from serving.settings import ServingSettings
    from stream.dev.assets import AssetPaths

    paths = AssetPaths.for_profile(ServingSettings(), True)
    suffixes = {".jpg", ".jpeg", ".png", ".webp"}
    return sorted(p for p in paths.bench.rglob("*") if p.suffix.lower() in suffixes)


def stop_on_sigterm() -> None:
    """Make SIGTERM a `SystemExit`, so the broker, Triton and workers are stopped."""

    def _exit(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def vm_kib(pid: int, key: str) -> int | None:
    """A ``/proc/<pid>/status`` field in KiB (``VmRSS``, ``VmHWM``), None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def reset_peak(pid: int) -> None:
    """Reset the process's peak RSS (``VmHWM``) to its current RSS."""
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


class Worker:
    """One worker process; stdout/stderr to files; peak RSS kept after death."""

    def __init__(self, env: dict[str, str], log_dir: Path, name: str) -> None:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.err_path = log_dir / f"{name}.err"
        self.out_path = log_dir / f"{name}.out"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "stream.worker_main"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=err,
            )
        self.started_at = time.monotonic()
        self.peak_rss_kib = 0

    @property
    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc.poll() is None

    def endpoints(self, timeout_s: float = 120.0) -> dict[str, str]:
        """The JSON line the worker prints once its health endpoint is up."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.out_path.read_text().splitlines():
                if "{" in line:  # faust may put terminal codes before it
                    return dict(json.loads(line[line.index("{") :]))
            if not self.alive:
                break
            time.sleep(0.1)
        raise RuntimeError(f"worker did not announce; log {self.err_path}")

    def peak_now(self) -> int:
        """Peak RSS so far, KiB (updates `peak_rss_kib`)."""
        hwm = vm_kib(self.proc.pid, "VmHWM")
        if hwm is not None:
            self.peak_rss_kib = max(self.peak_rss_kib, hwm)
        return self.peak_rss_kib

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Read the peak RSS, send `sig`, reap.

        Not ``wait4``'s ``ru_maxrss``: Linux carries the parent's peak over the
        ``vfork`` + ``exec`` that started the worker.
        """
        self.peak_now()
        if self.alive:
            self.proc.send_signal(sig)
        self.reap()

    def reap(self, timeout_s: float = 60.0) -> None:
        """Wait for the process (SIGKILL after `timeout_s`)."""
        deadline = time.monotonic() + timeout_s
        while self.proc.returncode is None:
            pid, status = os.waitpid(self.proc.pid, os.WNOHANG)
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return
            if time.monotonic() > deadline:
                self.proc.kill()
            time.sleep(0.05)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of stderr."""
        text = self.err_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])


@dataclass
class Arrival:
    """One record on the verdicts or DLQ topic."""

    image_id: str
    at: float
    sent: float
    dlq_class: str | None
    label: str | None


@dataclass
class Answers:
    """Follows the verdicts and DLQ topics from the beginning (no group)."""

    bootstrap: str
    verdicts: str
    dlq: str
    partitions: int
    arrivals: list[Arrival] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _positions: dict[tuple[str, int], int] = field(default_factory=dict)

    async def start(self) -> None:
        """Start the reader task."""
        self._task = asyncio.create_task(self._read())

    async def stop(self) -> None:
        """Stop the reader task."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _read(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                enable_auto_commit=False,
                request_timeout_ms=5000,
            )
            try:
                await consumer.start()
                tps = [
                    TopicPartition(t, p)
                    for t in (self.verdicts, self.dlq)
                    for p in range(self.partitions)
                ]
                consumer.assign(tps)
                await self._resume(consumer, tps)
                while True:
                    batches = await consumer.getmany(timeout_ms=200)
                    now = time.monotonic()
                    for tp, records in batches.items():
                        for r in records:
                            self._positions[(tp.topic, tp.partition)] = r.offset + 1
                            self.arrivals.append(self._arrival(tp.topic, r, now))
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - a frozen broker: reconnect and resume
                await asyncio.sleep(0.5)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()

    async def _resume(self, consumer: AIOKafkaConsumer, tps: list[Any]) -> None:
        for tp in tps:
            pos = self._positions.get((tp.topic, tp.partition))
            if pos is None:
                await consumer.seek_to_beginning(tp)
            else:
                consumer.seek(tp, pos)

    def _arrival(self, topic: str, record: Any, now: float) -> Arrival:
        # the worker's send time (CreateTime) on this process's monotonic clock
        sent = record.timestamp / 1000 - (time.time() - time.monotonic())
        if topic == self.dlq:
            headers = DeadLetterHeaders.from_kafka(list(record.headers))
            try:
                image_id = str(json.loads(record.value)["image_id"])
            except (ValueError, KeyError, TypeError):
                image_id = (record.key or b"").decode(errors="replace")
            return Arrival(image_id, now, sent, headers.error_class, None)
        doc = json.loads(record.value)
        return Arrival(str(doc["image_id"]), now, sent, None, doc.get("label"))

    def first_after(self, t: float) -> float | None:
        """Send time of the first answer the worker sent after monotonic time `t`."""
        later = [a.sent for a in self.arrivals if a.sent > t]
        return min(later) if later else None

    def by_id(self) -> dict[str, list[Arrival]]:
        """Arrivals grouped by image id."""
        out: dict[str, list[Arrival]] = {}
        for a in self.arrivals:
            out.setdefault(a.image_id, []).append(a)
        return out


class Rig:
    """A broker and a tritonserver (separate processes) and one run's topics.

    Args:
        broker: A started (or, with `local`, to-be-started) Tansu broker.
        triton: A tritonserver on fixed ports (restartable in place).
        work: Logs and scratch files.
        partitions: Partitions of each topic.
    """

    def __init__(
        self,
        broker: TansuBroker,
        triton: TritonServer,
        work: Path,
        partitions: int = 4,
    ) -> None:
        self.broker, self.triton = broker, triton
        self.work = work
        self.partitions = partitions
        tag = uuid.uuid4().hex[:8]
        self.uploads, self.verdicts, self.dlq = (
            f"rig.uploads.{tag}",
            f"rig.verdicts.{tag}",
            f"rig.dlq.{tag}",
        )
        self.group = f"rig-{tag}"
        self.answers = Answers("", self.verdicts, self.dlq, partitions)
        self._n_workers = 0

    @classmethod
    @contextlib.contextmanager
    def local(cls, repo: Path, work: Path, partitions: int = 4) -> Iterator[Rig]:
        """Start a broker and a tritonserver for `repo`; stop both on exit."""
        broker = TansuBroker(log_path=work / "tansu.log")
        triton = TritonServer(repo, ServerOptions(), work_dir=work / "triton")
        with broker, triton:
            yield cls(broker, triton, work, partitions)

    async def create_topics(self) -> None:
        """Create the run's three topics and start following the answers."""
        await create_topics(
            self.broker.bootstrap, [self.uploads, self.verdicts, self.dlq],
            self.partitions,
        )  # fmt: skip
        self.answers.bootstrap = self.broker.bootstrap
        await self.answers.start()

    def worker_env(self, runner: str, **extra: str) -> dict[str, str]:
        """The worker's environment: this rig's broker, Triton and topics."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHGUARD_")}
        tmp = self.work / "tmp"  # a SIGKILLed faust worker leaves its datadir here
        tmp.mkdir(parents=True, exist_ok=True)
        env.update(
            PYTHONPATH=str(ROOT),
            TMPDIR=str(tmp),
            SYNTHGUARD_LOG_LEVEL="WARNING",
            SYNTHGUARD_RUNNER=runner,
            SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS=self.broker.bootstrap,
            SYNTHGUARD_KAFKA__UPLOADS_TOPIC=self.uploads,
            SYNTHGUARD_KAFKA__VERDICTS_TOPIC=self.verdicts,
            SYNTHGUARD_KAFKA__DLQ_TOPIC=self.dlq,
            SYNTHGUARD_KAFKA__GROUP_ID=self.group,
            SYNTHGUARD_TRITON__URL=self.triton.grpc_url,
            SYNTHGUARD_METRICS__PORT="0",
            SYNTHGUARD_WORKER__DEDUPE_SIZE="0",
            SYNTHGUARD_WORKER__OUTAGE_POLL_S="0.5",
        )
        env.update(extra)
        return env

    def start_worker(self, env: dict[str, str]) -> Worker:
        """Start one worker process."""
        self._n_workers += 1
        return Worker(env, self.work / "workers", f"worker-{self._n_workers}")

    async def publish(self, payloads: list[tuple[str, bytes]]) -> list[float]:
        """Send ``(image_id, event JSON)`` pairs; monotonic ack time of each."""
        prod = producer(self.broker.bootstrap)
        await prod.start()
        try:
            futs = [
                await prod.send(self.uploads, body, key=image_id.encode())
                for image_id, body in payloads
            ]
            acked = []
            for fut in futs:
                await fut
                acked.append(time.monotonic())
            return acked
        finally:
            await prod.stop()

    def kill_triton(self) -> None:
        """SIGKILL tritonserver and its backend stubs (its process group)."""
        pid = self.triton.pid
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.triton.stop()  # reaps; the ports stay this server's

    def freeze_broker(self, frozen: bool) -> None:
        """SIGSTOP (True) or SIGCONT (False) the broker."""
        pid = self.broker.pid
        if pid is not None:
            os.kill(pid, signal.SIGSTOP if frozen else signal.SIGCONT)
