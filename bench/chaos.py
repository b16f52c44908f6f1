"""Chaos suite: faults against broker, tritonserver and worker as separate processes.

Real Tansu broker, real tritonserver (tiny-profile heads, `bench.rig.tiny_repo`),
one worker process (``python -m stream.worker_main``) with static membership
(``SYNTHGUARD_KAFKA__GROUP_INSTANCE_ID``, as the pod name in ``deploy/``). ``--events``
distinct real images (random crops of the tiny benchmark's images, re-encoded),
1 % of them poison (truncated, not an image, empty: DLQ), are published open loop
at ``--rate`` events/s. While they flow, one at a time: three worker SIGKILLs (the
worker is restarted at once, like a kubelet), one tritonserver SIGKILL + restart on
the same ports, one broker SIGSTOP for ``--freeze`` s then SIGCONT. Recovery of a
fault = from the kill (SIGCONT for the broker) to the next answer. At the end:
published, answered, missing (must be 0: exit 1 otherwise), duplicates, DLQ by
class, recovery per fault, the workers' peak RSS.

    python -m bench.chaos [--runner aiokafka|faust] [--events 2000] [--rate 8]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

if __name__ == "__main__":  # run as a script: bench/ would shadow the packages
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]

from PIL import Image

from bench.rig import Rig, Worker, stop_on_sigterm, tiny_bench_images, tiny_repo
from stream.dev.testing import truncated_jpeg
from stream.events import UploadEvent, utc_now

PLAN = ("worker_sigkill",) * 3 + ("triton_sigkill", "broker_sigstop")


@dataclass
class Fault:
    """One injected fault and when service came back."""

    name: str
    at: float
    restored_at: float
    answered_at: float | None = None

    @property
    def recovery_s(self) -> float | None:
        """Seconds from the restore point to the next answer."""
        if self.answered_at is None:
            return None
        return self.answered_at - self.restored_at


def distinct_images(n: int, out: Path, seed: int = 0) -> list[Path]:
    """`n` distinct JPEGs: random crops (>= 60 % a side) of the benchmark images."""
    sources = tiny_bench_images()
    rng = random.Random(seed)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    seen: set[str] = set()
    while len(paths) < n:
        src = Image.open(rng.choice(sources)).convert("RGB")
        w, h = src.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        img = src.crop((x, y, x + cw, y + ch)).resize((rng.randint(200, 320),) * 2)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=rng.randint(80, 95))
        digest = hashlib.sha256(buf.getvalue()).hexdigest()
        if digest in seen:
            continue
        seen.add(digest)
        path = out / f"img-{len(paths):05d}.jpg"
        path.write_bytes(buf.getvalue())
        paths.append(path)
    return paths


def events(paths: list[Path], poison_every: int) -> list[tuple[str, bytes]]:
    """``(image_id, JSON)``: file URIs, every `poison_every`-th one inline poison."""
    poisons = [truncated_jpeg(), b"not an image at all", b""]
    out = []
    for i, path in enumerate(paths):
        image_id = f"chaos-{i:05d}"
        if poison_every and i % poison_every == poison_every - 1:
            data = poisons[(i // poison_every) % len(poisons)]
            event = UploadEvent(
                image_id=image_id,
                data_b64=base64.b64encode(data).decode(),
                uploaded_at=utc_now(),
            )
        else:
            event = UploadEvent(
                image_id=image_id, uri=path.resolve().as_uri(), uploaded_at=utc_now()
            )
        out.append((image_id, event.model_dump_json().encode()))
    return out


class Chaos:
    """One run: the rig, the current worker, the faults."""

    def __init__(self, rig: Rig, args: argparse.Namespace) -> None:
        self.rig, self.args = rig, args
        extra = {"SYNTHGUARD_KAFKA__GROUP_INSTANCE_ID": "synthguard-worker-0"}
        if args.dynamic:
            extra = {}
        extra["SYNTHGUARD_LOG_LEVEL"] = args.log_level
        self.env = rig.worker_env(args.runner, **extra)
        self.workers: list[Worker] = []
        self.faults: list[Fault] = []

    def start_worker(self) -> None:
        """Start a worker process (the previous one is dead)."""
        self.workers.append(self.rig.start_worker(self.env))

    @property
    def worker(self) -> Worker:
        """The current worker."""
        return self.workers[-1]

    async def publish(self, payloads: list[tuple[str, bytes]]) -> None:
        """Open-loop publishing at ``--rate`` events/s, in one-second slices."""
        per_slice = max(1, int(self.args.rate))
        t0 = time.monotonic()
        for i in range(0, len(payloads), per_slice):
            await self.rig.publish(payloads[i : i + per_slice])
            await asyncio.sleep(max(0.0, t0 + (i + per_slice) / self.args.rate
                                    - time.monotonic()))  # fmt: skip

    async def inject(self, name: str) -> Fault:
        """Inject one fault, restore, and wait for the next answer."""
        now = time.monotonic()
        if name == "worker_sigkill":
            self.worker.kill()
            self.start_worker()
            fault = Fault(name, now, now)
        elif name == "triton_sigkill":
            self.rig.kill_triton()
            await asyncio.to_thread(self.rig.triton.start)
            fault = Fault(name, now, now)
            fault.triton_restart_s = time.monotonic() - now  # type: ignore[attr-defined]
        else:
            self.rig.freeze_broker(True)
            await asyncio.sleep(self.args.freeze)
            self.rig.freeze_broker(False)
            fault = Fault(name, now, time.monotonic())
        deadline = time.monotonic() + self.args.recovery_timeout
        while time.monotonic() < deadline:
            fault.answered_at = self.rig.answers.first_after(fault.restored_at)
            if fault.answered_at is not None:
                break
            if not self.worker.alive:
                self.start_worker()  # e.g. exit 2 on a fatal group error
            await asyncio.sleep(0.1)
        self.worker.peak_now()
        self.faults.append(fault)
        return fault

    async def run(self, payloads: list[tuple[str, bytes]]) -> None:
        """Publish while injecting the faults, then wait for every answer."""
        self.start_worker()
        await asyncio.to_thread(self.worker.endpoints)
        publishing = asyncio.create_task(self.publish(payloads))
        sampling = asyncio.create_task(self._sample_rss())
        plan = self.args.faults.split(",")
        await asyncio.sleep(self.args.gap)
        for name in plan:
            fault = await self.inject(name)
            rec = fault.recovery_s
            print(
                f"fault {name}: recovery "
                + (f"{rec:.1f} s" if rec is not None else "none"),
                flush=True,
            )
            await asyncio.sleep(self.args.gap)
        await publishing
        ids = {i for i, _ in payloads}
        deadline = time.monotonic() + self.args.drain_timeout
        while time.monotonic() < deadline and not ids <= set(self.rig.answers.by_id()):
            self.worker.peak_now()
            await asyncio.sleep(0.5)
        sampling.cancel()
        self.worker.kill()

    async def _sample_rss(self) -> None:
        while True:
            self.worker.peak_now()
            await asyncio.sleep(0.25)


def report(chaos: Chaos, payloads: list[tuple[str, bytes]], elapsed_s: float) -> int:
    """Print the table; 1 if any event is missing."""
    ids = [i for i, _ in payloads]
    got = chaos.rig.answers.by_id()
    missing = [i for i in ids if i not in got]
    dupes = sum(len(v) - 1 for v in got.values() if len(v) > 1)
    dlq = Counter(a.dlq_class for v in got.values() for a in v[:1] if a.dlq_class)
    labels = Counter(a.label for v in got.values() for a in v[:1] if a.label)
    lines = [
        f"runner {chaos.args.runner}, membership "
        + ("dynamic" if chaos.args.dynamic else "static"),
        f"published {len(ids)}  answered {len(ids) - len(missing)}  "
        f"missing {len(missing)}  duplicates {dupes}",
        f"verdicts {dict(labels)}  dlq {dict(dlq)}",
        f"elapsed {elapsed_s:.0f} s  workers started {len(chaos.workers)}  "
        f"worker peak RSS {max(w.peak_rss_kib for w in chaos.workers) / 1024:.0f} MiB",
    ]
    for f in chaos.faults:
        rec = f"{f.recovery_s:.1f} s" if f.recovery_s is not None else "none"
        extra = getattr(f, "triton_restart_s", None)
        note = f" (tritonserver restart {extra:.1f} s)" if extra else ""
        lines.append(f"  {f.name:15s} recovery {rec}{note}")
    text = "\n".join(lines)
    print(text, flush=True)
    summary = {
        "runner": chaos.args.runner,
        "static": not chaos.args.dynamic,
        "published": len(ids),
        "missing": len(missing),
        "duplicates": dupes,
        "dlq": dict(dlq),
        "recovery_s": [(f.name, f.recovery_s) for f in chaos.faults],
        "peak_rss_mib": max(w.peak_rss_kib for w in chaos.workers) / 1024,
    }
    print(json.dumps(summary), flush=True)
    return 1 if missing else 0


async def _main(args: argparse.Namespace, work: Path) -> int:
    paths = distinct_images(args.events, work / "images", args.seed)
    payloads = events(paths, args.poison_every)
    with Rig.local(tiny_repo(work), work, args.partitions) as rig:
        await rig.create_topics()
        chaos = Chaos(rig, args)
        t0 = time.monotonic()
        try:
            await chaos.run(payloads)
        finally:
            for w in chaos.workers:
                w.kill()
            await rig.answers.stop()
        return report(chaos, payloads, time.monotonic() - t0)


def main(argv: list[str] | None = None) -> int:
    """Parse the options, run the suite, print the report."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runner", choices=("aiokafka", "faust"), default="aiokafka")
    p.add_argument("--events", type=int, default=2000)
    p.add_argument("--rate", type=float, default=8.0, help="events/s published")
    p.add_argument("--poison-every", type=int, default=100)
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--gap", type=float, default=8.0, help="s between faults")
    p.add_argument("--freeze", type=float, default=10.0, help="broker SIGSTOP s")
    p.add_argument("--recovery-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=600.0)
    p.add_argument("--dynamic", action="store_true", help="no group.instance.id")
    p.add_argument("--faults", default=",".join(PLAN), help="comma-separated plan")
    p.add_argument("--log-level", default="WARNING", help="the workers' log level")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, help="keep logs here (default: temp)")
    args = p.parse_args(argv)
    stop_on_sigterm()
    if args.work:
        args.work.mkdir(parents=True, exist_ok=True)
        return asyncio.run(_main(args, args.work.resolve()))
    with tempfile.TemporaryDirectory(prefix="synthguard-chaos-") as tmp:
        return asyncio.run(_main(args, Path(tmp)))


if __name__ == "__main__":
    sys.exit(main())
