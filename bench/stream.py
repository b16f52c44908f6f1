"""Benchmark: events/s through Kafka (Tansu) + the worker + Triton vs bare Triton.

One run, everything on loopback with free ports, the worker as a subprocess
(``python -m stream worker``, aiokafka runner, dedupe off so every event is inferred):

1. **bare Triton**: the same images, decoded and preprocessed beforehand, sent with
   `TritonDetectorClient.detect` in batches of ``--batch`` with ``--concurrency``
   batches in flight (the worker's own shape): images/s.
2. **max rate**: a backlog of ``--events`` upload events (``file://`` URIs) is
   published at once; events/s from the first publish to the last verdict. The
   ratio to (1) is the figure of merit.
3. **paced**: ``--paced`` events published open-loop at 50 % and at 90 % of the
   max rate; p50/p99 of event→verdict latency (publish acknowledged → verdict read,
   one clock).

    python -m bench.stream [--artifacts DIR] [--images DIR] [--events 64] [--paced 32]

Without ``--artifacts`` tiny heads are fitted on random features (throughput does
not depend on head quality); without ``--images`` the offline benchmark's test
split is used when present, else random 256 px JPEGs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

if __name__ == "__main__":  # run as a script: bench/ would shadow the packages
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

from bench.serving import synthetic_artifacts
from serving.preprocessing import clip_default
from serving.settings import ServingSettings
from serving.triton.client import TritonDetectorClient
from serving.triton.export import export_repository
from serving.triton.server import TritonServer
from stream.dev.broker import TansuBroker, create_topics
from stream.dev.produce import IMAGE_SUFFIXES, producer, upload_event
from stream.dev.report import percentile

ROOT = Path(__file__).resolve().parents[1]
TOPICS = ("bench.uploads", "bench.verdicts", "bench.dlq")
PARTITIONS = 4


def image_files(directory: Path | None, n: int, tmp: Path) -> list[Path]:
    """Up to n image files: from `directory`, the benchmark's test split, or random."""
    bench = ServingSettings().bench_dir / "test"
    for d in (directory, bench):
        if d is not None and d.is_dir():
            files = sorted(
                p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
            )
            if files:
                return files[:n]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        base = rng.integers(0, 255, (1, 1, 3))
        noise = rng.normal(0, 40, (256, 256, 3))
        arr = np.clip(base + noise, 0, 255).astype(np.uint8)
        path = tmp / f"random_{i:03d}.jpg"
        Image.fromarray(arr).save(path, quality=90)
        out.append(path)
    return out


async def bare_triton(url: str, files: Sequence[Path], batch: int, conc: int) -> float:
    """Images/s of `detect` on preprocessed images, `conc` batches in flight."""
    pixels = np.stack([clip_default(Image.open(p).convert("RGB")) for p in files])
    chunks = [pixels[i : i + batch] for i in range(0, len(pixels), batch)]
    async with TritonDetectorClient(url, timeout_s=300) as client:
        await client.detect(pixels[:batch])  # warm-up
        queue = list(chunks)
        t0 = time.perf_counter()

        async def worker() -> None:
            while queue:
                await client.detect(queue.pop())

        await asyncio.gather(*(worker() for _ in range(conc)))
        return len(pixels) / (time.perf_counter() - t0)


class Verdicts:
    """Reads the verdicts topic in the background: image_id → receive time."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.seen: dict[str, float] = {}
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer, TopicPartition

        self.consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap)
        await self.consumer.start()
        tps = [TopicPartition(TOPICS[1], p) for p in range(PARTITIONS)]
        self.consumer.assign(tps)
        await self.consumer.seek_to_beginning(*tps)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batches = await self.consumer.getmany(timeout_ms=100)
            now = loop.time()
            for rec in (r for rs in batches.values() for r in rs):
                self.seen.setdefault(json.loads(rec.value)["image_id"], now)

    async def wait_for(self, ids: Sequence[str], timeout_s: float) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not all(i in self.seen for i in ids):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"{sum(i in self.seen for i in ids)}/{len(ids)} verdicts"
                )
            await asyncio.sleep(0.05)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.consumer.stop()


async def publish(
    bootstrap: str, files: Sequence[Path], prefix: str, rate: float | None
) -> dict[str, float]:
    """Publish one event per file (open loop at `rate`/s, or at once); ack times."""
    loop = asyncio.get_running_loop()
    prod = producer(bootstrap)
    await prod.start()
    sent: dict[str, float] = {}
    try:
        events = [
            upload_event(p, "uri", image_id=f"{prefix}{i}") for i, p in enumerate(files)
        ]
        t0 = loop.time()
        pending = []
        for i, event in enumerate(events):
            if rate is not None:
                await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
            fut = await prod.send(
                TOPICS[0], event.model_dump_json().encode(), key=event.image_id.encode()
            )
            pending.append((event.image_id, fut))
            if rate is not None:
                await fut
                sent[event.image_id] = loop.time()
        for image_id, fut in pending:
            await fut
            sent.setdefault(image_id, loop.time())
    finally:
        await prod.stop()
    return sent


def start_worker(
    bootstrap: str, triton_url: str, args: argparse.Namespace, log: Path
) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SYNTHGUARD_")}
    env.update(
        PYTHONPATH=str(ROOT),
        SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS=bootstrap,
        SYNTHGUARD_KAFKA__UPLOADS_TOPIC=TOPICS[0],
        SYNTHGUARD_KAFKA__VERDICTS_TOPIC=TOPICS[1],
        SYNTHGUARD_KAFKA__DLQ_TOPIC=TOPICS[2],
        SYNTHGUARD_TRITON__URL=triton_url,
        SYNTHGUARD_TRITON__TIMEOUT_S="300",
        SYNTHGUARD_METRICS__ENABLED="false",
        SYNTHGUARD_WORKER__BATCH_MAX=str(args.batch),
        SYNTHGUARD_WORKER__MAX_CONCURRENT_BATCHES=str(args.concurrency),
        SYNTHGUARD_WORKER__MAX_IN_FLIGHT=str(4 * args.batch),
        SYNTHGUARD_WORKER__DEDUPE_SIZE="0",
    )
    with log.open("wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "stream", "worker", "--runner", "aiokafka"],
            env=env, stdout=subprocess.DEVNULL, stderr=err, cwd=ROOT,
        )  # fmt: skip


async def run(
    args: argparse.Namespace,
    broker: TansuBroker,
    triton: TritonServer,
    files: list[Path],
    tmp: Path,
) -> dict[str, float]:
    results = {
        "bare_triton_images_per_s": await bare_triton(
            triton.grpc_url, files, args.batch, args.concurrency
        )
    }
    await create_topics(broker.bootstrap, list(TOPICS), PARTITIONS)
    worker = start_worker(broker.bootstrap, triton.grpc_url, args, tmp / "worker.log")
    verdicts = Verdicts(broker.bootstrap)
    await verdicts.start()
    try:
        warm = await publish(broker.bootstrap, files[: args.batch], "warm-", None)
        await verdicts.wait_for(list(warm), 300)
        backlog = [files[i % len(files)] for i in range(args.events)]
        sent = await publish(broker.bootstrap, backlog, "max-", None)
        await verdicts.wait_for(list(sent), 600)
        first = min(sent.values()) - 0.0
        span = max(verdicts.seen[i] for i in sent) - first
        results["kafka_events_per_s"] = len(sent) / span
        for share in (0.5, 0.9):
            rate = share * results["kafka_events_per_s"]
            paced = [files[i % len(files)] for i in range(args.paced)]
            sent = await publish(broker.bootstrap, paced, f"p{int(share * 100)}-", rate)
            await verdicts.wait_for(list(sent), 600)
            lat = [verdicts.seen[i] - t for i, t in sent.items()]
            results[f"p50_s_at_{int(share * 100)}"] = percentile(lat, 50)
            results[f"p99_s_at_{int(share * 100)}"] = percentile(lat, 99)
            results[f"rate_at_{int(share * 100)}"] = rate
    finally:
        await verdicts.stop()
        worker.terminate()
        worker.wait(60)
    return results


def markdown(r: dict[str, float], args: argparse.Namespace) -> str:
    ratio = r["kafka_events_per_s"] / r["bare_triton_images_per_s"]
    rows = [
        "| measure | value |",
        "|---|---:|",
        f"| bare Triton (batch {args.batch}, {args.concurrency} in flight) | {r['bare_triton_images_per_s']:.2f} images/s |",
        f"| Kafka + worker + Triton, backlog of {args.events} | {r['kafka_events_per_s']:.2f} events/s |",
        f"| ratio end-to-end / bare | {ratio:.2f} |",
    ]
    for share in (50, 90):
        rows.append(
            f"| event→verdict at {share} % ({r[f'rate_at_{share}']:.2f} events/s, {args.paced} events) "
            f"| p50 {r[f'p50_s_at_{share}']:.2f} s, p99 {r[f'p99_s_at_{share}']:.2f} s |"
        )
    return "\n".join(rows) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--artifacts", type=Path, help="trained artifacts (default: synthetic heads)"
    )
    ap.add_argument(
        "--images", type=Path, help="image folder (default: bench test split)"
    )
    ap.add_argument(
        "--events", type=int, default=64, help="backlog events for the max rate"
    )
    ap.add_argument("--paced", type=int, default=32, help="events per paced point")
    ap.add_argument("--batch", type=int, default=16, help="worker batch = bare batch")
    ap.add_argument("--concurrency", type=int, default=2, help="batches in flight")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    tmp = Path(tempfile.mkdtemp(prefix="synthguard-bench-stream-"))
    artifacts = args.artifacts or synthetic_artifacts(tmp / "artifacts")
    repo = tmp / "model_repository"
    export_repository(artifacts, repo, link_encoder=True)
    files = image_files(args.images, max(args.events, args.paced, args.batch), tmp)
    with TansuBroker() as broker, TritonServer(repo, work_dir=tmp / "triton") as triton:
        results = asyncio.run(run(args, broker, triton, files, tmp))
    sys.stdout.write(markdown(results, args))
    sys.stdout.write(json.dumps(results, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
