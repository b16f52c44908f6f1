"""Benchmark: few-shot adaptation through the feedback topic (issue 13 item 2).

Holds one generator family F out of training, trains the product's heads on the
others (``serving.workflows``: `fit_heads`, `calibrate_heads`, `fit_decision`, a fixed
decision instead of the slow leave-one-family-out choice), exports a Triton model
repository whose ``head_knn`` polls a feedback-bank directory, and starts the real
stack on free loopback ports: a Tansu broker, ``tritonserver`` and the learner
(`stream.runners.learner_runner.serve_learner`). Then it feeds 0, 5, 10, 25, 50
labelled fakes of F from F's train split, and as many of F's reals, as real
``synthguard.feedback.v1`` events (inline bytes) and, after each step, waits until
the served detections carry the new bank version and scores F's test images through
Triton. Per step it prints the kNN head's and the decisions' AUC and TPR@1 %FPR on
F's test images, and the seconds from the last feedback event produced to the first
detection carrying the new bank version.

Decisions: the deployed one (``--decision``, default ``fusion``: the mean of the
standardised scores of every head, kNN included) is the served probability; the
``linear_probe`` column is the served linear-probe head's score, i.e. what a
deployment with decision ``linear_probe`` serves (its heads are the same files). The
probe does not read the kNN bank, so feedback cannot move it.

    python -m bench.fewshot                      # $SYNTHGUARD_HOME/bench, output under it
    python -m bench.fewshot --bench DIR --home DIR
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from serving.artifacts import EncoderRecord, write_artifacts
from serving.feedback_bank import MANIFEST_FILE
from serving.jobs import encoder_for, features_for
from serving.preprocessing import get_policy, policy_id
from serving.references import fit_references
from serving.scoring.detection import Detection
from serving.scoring.metrics import roc_auc, tpr_at_fpr
from serving.settings import ServingSettings
from serving.triton.client import TritonDetectorClient
from serving.triton.export import export_repository
from serving.triton.server import ServerOptions, TritonServer
from serving.workflows import HeadOptions, calibrate_heads, fit_decision, fit_heads
from stream.dev.broker import TansuBroker, create_topics
from stream.dev.produce import producer
from stream.events import utc_now
from stream.runners.learner_runner import serve_learner
from stream.settings import StreamSettings

logger = logging.getLogger(__name__)
HEADS = ("knn_k9", "linear_probe", "mlp", "rine")
PROBE = "linear_probe"
PARTITIONS = 2
BATCH = 16
FPR = 0.01
REAL, FAKE = "0_real", "1_fake"


@dataclass(frozen=True)
class Step:
    """One row of the table."""

    shots: int
    knn: tuple[float, float]
    decision: tuple[float, float]
    probe: tuple[float, float]
    effect_s: float | None
    bank_rows: int


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--bench", type=Path, help="benchmark root (default $SYNTHGUARD_HOME/bench)"
    )
    p.add_argument(
        "--home", type=Path, help="feature cache, output (default $SYNTHGUARD_HOME)"
    )
    p.add_argument("--family", default="espcn_x4", help="held-out generator family")
    p.add_argument("--shots", default="0,5,10,25,50", help="fakes (= reals) fed")
    p.add_argument("--decision", default="fusion", help="deployed decision")
    p.add_argument("--test-per-class", type=int, default=None, help="cap test images")
    p.add_argument("--mlp-epochs", type=int, default=4)
    p.add_argument("--rine-epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--effect-timeout-s", type=float, default=120.0)
    args = p.parse_args(argv)
    settings = (
        ServingSettings() if args.home is None else ServingSettings(home=args.home)
    )
    args.home = settings.home
    args.bench = args.bench or settings.bench_dir
    return args


def train(args: argparse.Namespace, out: Path) -> str:
    """Fit the heads on every family but F, calibrate on cal∖F, write artifacts."""
    settings = ServingSettings(home=args.home)
    encoder = encoder_for(settings)
    opts = HeadOptions(
        seed=args.seed, mlp_epochs=args.mlp_epochs, rine_epochs=args.rine_epochs
    )
    tr = features_for(settings, encoder, args.bench / "train", progress=False)
    cal = features_for(settings, encoder, args.bench / "cal", progress=False)
    if not tr.family_mask(args.family).any():
        raise SystemExit(f"family {args.family!r} not in {sorted(set(tr.families))}")
    tr, cal = (
        tr.select(~tr.family_mask(args.family)),
        cal.select(~cal.family_mask(args.family)),
    )
    t0 = time.perf_counter()
    heads = fit_heads(tr, HEADS, opts)
    cals = calibrate_heads(heads, cal, opts)
    rule = fit_decision(args.decision, heads, cal, opts)
    record = EncoderRecord.from_info(encoder.info, policy_id(settings.policy))
    training = {
        "data": str(args.bench),
        "held_out_family": args.family,
        "families": sorted(set(tr.families)),
        "n_train": len(tr.y),
        "n_cal": len(cal.y),
        "options": opts.__dict__,
    }
    refs = fit_references(heads, cal.x, rule)
    write_artifacts(out, record, heads, cals, rule, training, refs)
    members = rule.fusion.members if rule.fusion else (rule.name,)
    logger.warning(
        "trained on %d families (%d images) in %.0f s; decision %s over %s",
        len(set(tr.families)),
        len(tr.y),
        time.perf_counter() - t0,
        rule.name,
        ",".join(members),
    )
    return settings.policy


def images(root: Path, cls: str, n: int | None, seed: int) -> list[Path]:
    paths = sorted((root / cls).iterdir())
    order = np.random.default_rng(seed).permutation(len(paths))
    return [paths[i] for i in order[: n or len(paths)]]


def event(path: Path, label: str) -> tuple[bytes, bytes]:
    """(key, value) of one inline ``synthguard.feedback.v1`` event."""
    data = path.read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    doc = {
        "schema_version": 1,
        "image_id": path.stem,
        "content_sha256": sha,
        "data_b64": base64.b64encode(data).decode("ascii"),
        "label": label,
        "reviewer": "bench-fewshot",
        "decided_at": utc_now().isoformat(),
    }
    return sha.encode(), json.dumps(doc).encode()


def metrics(y: npt.NDArray[np.int64], s: list[float]) -> tuple[float, float]:
    return roc_auc(y, s), tpr_at_fpr(y, s, FPR)


async def score(
    client: TritonDetectorClient, pixels: npt.NDArray[np.uint8]
) -> list[Detection]:
    out: list[Detection] = []
    for i in range(0, len(pixels), BATCH):
        out += await client.detect(pixels[i : i + BATCH])
    return out


async def wait_bank(bank: Path, applied: int, timeout_s: float) -> tuple[str, int]:
    """The bank version once its checkpoint covers `applied` records."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            doc = json.loads((bank / MANIFEST_FILE).read_text())
            if sum(o + 1 for o in doc["offsets"].values()) >= applied:
                return str(doc["version"]), len(doc["entries"])
        await asyncio.sleep(0.05)
    raise TimeoutError(f"the learner did not apply {applied} records in {timeout_s}s")


async def wait_served(
    client: TritonDetectorClient,
    probe: npt.NDArray[np.uint8],
    version: str,
    timeout_s: float,
) -> float:
    """Monotonic time of the first detection that carries bank `version`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        (det,) = await client.detect(probe)
        if det.bank_version == version:
            return time.monotonic()
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no detection carried bank {version} in {timeout_s}s")


@dataclass
class Stack:
    """The running stack and the benchmark's data."""

    client: TritonDetectorClient
    bootstrap: str
    topic: str
    bank: Path
    train_root: Path
    test_pixels: npt.NDArray[np.uint8]
    test_y: npt.NDArray[np.int64]
    knn: str


async def step(stack: Stack, args: argparse.Namespace, prev: int, n: int) -> Step:
    """Feed shots prev..n of each class, wait for their effect, score the test set."""
    effect_s: float | None = None
    rows = prev * 2
    if n > prev:
        fakes = images(stack.train_root, FAKE, n, args.seed)[prev:n]
        reals = images(stack.train_root, REAL, n, args.seed)[prev:n]
        prod = producer(stack.bootstrap)
        await prod.start()
        try:
            for path, label in [(p, "ai_generated") for p in fakes] + [
                (p, "real") for p in reals
            ]:
                key, value = event(path, label)
                await (await prod.send(stack.topic, value, key=key))
            sent = time.monotonic()
        finally:
            await prod.stop()
        version, rows = await wait_bank(stack.bank, 2 * n, args.effect_timeout_s)
        seen = await wait_served(
            stack.client, stack.test_pixels[:1], version, args.effect_timeout_s
        )
        effect_s = seen - sent
    dets = await score(stack.client, stack.test_pixels)
    return Step(
        shots=n,
        knn=metrics(stack.test_y, [d.head_scores[stack.knn] for d in dets]),
        decision=metrics(stack.test_y, [d.probability for d in dets]),
        probe=metrics(stack.test_y, [d.head_scores[PROBE] for d in dets]),
        effect_s=effect_s,
        bank_rows=rows,
    )


def test_set(
    args: argparse.Namespace, policy: str
) -> tuple[npt.NDArray[np.uint8], npt.NDArray[np.int64]]:
    root = args.bench / "test" / args.family
    fn = get_policy(policy)
    reals = images(root, REAL, args.test_per_class, args.seed)
    fakes = images(root, FAKE, args.test_per_class, args.seed)
    pixels = np.stack([fn(Image.open(p).convert("RGB")) for p in reals + fakes])
    return pixels, np.repeat([0, 1], [len(reals), len(fakes)]).astype(np.int64)


def learner_settings(
    bootstrap: str, grpc: str, art: Path, bank: Path, topic: str
) -> StreamSettings:
    return StreamSettings.model_validate(
        {
            "kafka": {"bootstrap_servers": bootstrap},
            "triton": {"url": grpc},
            "metrics": {"enabled": False},
            "learner": {
                "feedback_topic": topic,
                "dlq_topic": topic + ".dlq",
                "group_id": f"learner-{uuid.uuid4().hex[:8]}",
                "artifacts_dir": art,
                "bank_dir": bank,
                "reviewer_max_events": 10_000,
            },
        }
    )


async def run_steps(
    args: argparse.Namespace, work: Path, srv: TritonServer, bootstrap: str
) -> list[Step]:
    topic = f"synthguard.feedback.v1.{uuid.uuid4().hex[:8]}"
    await create_topics(bootstrap, [topic, topic + ".dlq"], PARTITIONS)
    pixels, y = test_set(args, args.policy)
    settings = learner_settings(
        bootstrap, srv.grpc_url, work / "artifacts", work / "bank", topic
    )
    stop = asyncio.Event()
    learner = asyncio.create_task(serve_learner(settings, stop))
    out: list[Step] = []
    async with TritonDetectorClient(srv.grpc_url) as client:
        info = await client.detector_info()
        stack = Stack(
            client,
            bootstrap,
            topic,
            work / "bank",
            args.bench / "train" / args.family,
            pixels,
            y,
            info.heads["knn"],
        )
        prev = 0
        try:
            for n in [int(s) for s in args.shots.split(",")]:
                out.append(await step(stack, args, prev, n))
                print_row(out[-1])
                prev = n
        finally:
            stop.set()
            await asyncio.wait_for(learner, 60)
    return out


def print_row(s: Step) -> None:
    effect = "—" if s.effect_s is None else f"{s.effect_s:.2f}"
    print(
        f"| {s.shots} | {s.bank_rows} | {s.knn[0]:.4f} | {s.knn[1]:.3f} | "
        f"{s.decision[0]:.4f} | {s.decision[1]:.3f} | {s.probe[0]:.4f} | "
        f"{s.probe[1]:.3f} | {effect} |",
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    args.home.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="fewshot-", dir=args.home))
    args.policy = train(args, work / "artifacts")
    (work / "bank").mkdir()
    export_repository(
        work / "artifacts",
        work / "repo",
        link_encoder=True,
        feedback_bank=work / "bank",
    )
    print(
        f"held-out family {args.family}; deployed decision {args.decision}; "
        f"work dir {work}"
    )
    print(
        "| shots (fakes = reals) | bank rows | kNN AUC | kNN TPR@1%FPR | "
        f"decision ({args.decision}) AUC | decision TPR@1%FPR | linear_probe AUC | "
        "linear_probe TPR@1%FPR | feedback → effect (s) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    with (
        TansuBroker() as broker,
        TritonServer(work / "repo", ServerOptions(), work_dir=work / "triton") as srv,
    ):
        asyncio.run(run_steps(args, work, srv, broker.bootstrap))


if __name__ == "__main__":
    main()
