"""Benchmark: CLIP image encoder throughput and latency, in-process vs Triton.

Side by side in one run, one image per request, closed loop at each concurrency, the
three setups interleaved per concurrency (the load of a shared machine varies):
(a) the in-process `OnnxClipEncoder` behind ``asyncio.to_thread``; (b) the Triton
``clip_image_encoder`` without dynamic batching (``--model-config-name=no_batching``);
(c) the same with dynamic batching (the default config). Prints a Markdown table of
images/s, p50/p99 latency and, for Triton, the average executed batch size
(``nv_inference_count / nv_inference_exec_count``).

    python -m bench.serving [--artifacts DIR] [--requests 64] [--concurrency 1,4,8,16]

(``python bench/serving.py`` works too: this file's own directory is dropped from
``sys.path`` first, else the file itself would shadow the ``serving`` package.)

Without ``--artifacts`` tiny heads are fitted on random 512-d features (the encoder
model only needs a manifest naming the embedded int8 encoder).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

if __name__ == "__main__":  # run as a script: bench/ would shadow the package
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

from serving.artifacts import EncoderRecord, write_artifacts
from serving.encoders.onnx_clip import OnnxClipEncoder
from serving.features import FeatureMeta, FeatureSet
from serving.preprocessing import policy_id
from serving.triton import names
from serving.triton.client import TritonDetectorClient
from serving.triton.export import export_repository
from serving.triton.server import ServerOptions, TritonServer
from serving.workflows import HeadOptions, calibrate_heads, fit_heads

Images = npt.NDArray[np.uint8]
Request = Callable[[Images], Awaitable[object]]


@dataclass(frozen=True)
class Point:
    """One measured (setup, concurrency) point."""

    setup: str
    concurrency: int
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    avg_batch: float | None

    @property
    def images_per_s(self) -> float:
        """Throughput."""
        return self.requests / self.seconds


async def closed_loop(
    request: Request, images: Images, concurrency: int, n: int
) -> tuple[float, list[float]]:
    """Run `n` one-image requests with `concurrency` workers; (wall s, latencies s)."""
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t0 = time.perf_counter()
            await request(images[i % len(images)][None])
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - start, latencies


def point(
    setup: str, c: int, wall: float, lat: list[float], batch: float | None
) -> Point:
    """Summarise one run."""
    p50, p99 = np.percentile(np.array(lat) * 1e3, [50, 99])
    return Point(setup, c, len(lat), wall, float(p50), float(p99), batch)


def exec_counts(metrics_url: str) -> tuple[float, float]:
    """Triton's (inference count, execution count) of the encoder model."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:  # noqa: S310 - loopback
        text = resp.read().decode()
    found = {}
    for metric in ("nv_inference_count", "nv_inference_exec_count"):
        m = re.search(
            rf'^{metric}{{model="{names.ENCODER_MODEL}"[^}}]*}} (\S+)', text, re.M
        )
        found[metric] = float(m.group(1)) if m else 0.0
    return found["nv_inference_count"], found["nv_inference_exec_count"]


@dataclass(frozen=True)
class Setup:
    """One thing to measure: a name, a one-image request, Triton metrics if any."""

    name: str
    request: Request
    metrics_url: str | None = None


async def measure(setup: Setup, images: Images, c: int, n: int) -> Point:
    """One closed-loop point, with Triton's average executed batch when known."""
    before = exec_counts(setup.metrics_url) if setup.metrics_url else None
    wall, lat = await closed_loop(setup.request, images, c, n)
    batch = None
    if setup.metrics_url and before is not None:
        inf, exe = exec_counts(setup.metrics_url)
        batch = (inf - before[0]) / (exe - before[1]) if exe > before[1] else None
    return point(setup.name, c, wall, lat, batch)


def synthetic_artifacts(directory: Path, seed: int = 0) -> Path:
    """Tiny heads on random features, recorded as trained on the embedded encoder."""
    rng = np.random.default_rng(seed)
    y = np.repeat([0, 1], 40)
    info = OnnxClipEncoder(threads=1).info
    dim = info.layout.width
    x = (rng.normal(size=(len(y), dim)) + y[:, None] * 0.5).astype(np.float32)
    meta = FeatureMeta.of(info, "clip_default@1", "bench", len(y))
    paths = tuple(f"{label}/{i}" for i, label in enumerate(y))
    fs = FeatureSet(x, y.astype(np.int64), paths, ("bench",) * len(y), meta)
    opts = HeadOptions(mlp_epochs=1)
    heads = fit_heads(fs, ("knn_k1", "linear_probe", "mlp", "rine"), opts)
    record = EncoderRecord.from_info(info, policy_id("clip_default"))
    cals = calibrate_heads(heads, fs, opts)
    write_artifacts(directory, record, heads, cals, "linear_probe", {"bench": True})
    return directory


def markdown(points: Sequence[Point]) -> str:
    """The results as a Markdown table."""
    rows = [
        "| setup | concurrency | requests | images/s | p50 ms | p99 ms | avg batch |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        batch = f"{p.avg_batch:.2f}" if p.avg_batch is not None else "-"
        rows.append(
            f"| {p.setup} | {p.concurrency} | {p.requests} | {p.images_per_s:.2f} "
            f"| {p.p50_ms:.0f} | {p.p99_ms:.0f} | {batch} |"
        )
    return "\n".join(rows)


async def run(args: argparse.Namespace, tmp: Path) -> list[Point]:
    """Interleave the three setups at each concurrency (fair under a varying load)."""
    levels = [int(c) for c in args.concurrency.split(",")]
    images = np.random.default_rng(1).integers(
        0, 256, (16, 224, 224, 3), dtype=np.uint8
    )
    artifacts = args.artifacts or synthetic_artifacts(tmp / "artifacts")
    export_repository(artifacts, tmp / "repo", link_encoder=True)
    encoder = OnnxClipEncoder(threads=args.threads)

    async def in_process(x: Images) -> object:
        return await asyncio.to_thread(encoder.encode, x)

    setups = [Setup("(a) in-process OnnxClipEncoder", in_process)]
    variants = (
        ("(b) Triton, no dynamic batching", "no_batching"),
        ("(c) Triton, dynamic batching", None),
    )
    async with contextlib.AsyncExitStack() as stack:
        for name, config_name in variants:
            options = ServerOptions(
                model_config_name=config_name, load_models=(names.ENCODER_MODEL,)
            )
            srv = stack.enter_context(
                TritonServer(
                    tmp / "repo", options, work_dir=tmp / (config_name or "default")
                )
            )
            client = await stack.enter_async_context(
                TritonDetectorClient(srv.grpc_url, timeout_s=600.0)
            )
            setups.append(Setup(name, client.embed, srv.metrics_url))
        for setup in setups:
            await closed_loop(setup.request, images, 1, 2)  # warm-up
        return [
            await measure(s, images, c, args.requests) for c in levels for s in setups
        ]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse arguments, run, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, help="trained artifacts (default: tiny)")
    ap.add_argument("--requests", type=int, default=64, help="requests per point")
    ap.add_argument("--concurrency", default="1,4,8,16")
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count() or 1, help="ORT threads"
    )
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    load = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="synthguard-bench-") as tmp:
        points = asyncio.run(run(args, Path(tmp)))
    print(markdown(points))
    print(
        f"\n{os.cpu_count()} CPUs, 1-min load average {load[0]:.2f} before the run, "
        f"{os.getloadavg()[0]:.2f} after; "
        f"command: python -m bench.serving {' '.join(argv or sys.argv[1:])}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
