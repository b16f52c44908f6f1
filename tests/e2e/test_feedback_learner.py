"""End to end: feedback events on the REAL Tansu broker, encoded by the REAL
tritonserver (real int8 CLIP weights), into the feedback bank; then the issue's
replay test (the topic from offset 0 into a fresh bank is the same bank bit for bit)
and its reload test (a running tritonserver serves a new bank version, no restart).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from serving.feedback_bank import MANIFEST_FILE, FeedbackBank
from serving.preprocessing import clip_default
from serving.triton.client import TritonDetectorClient
from serving.triton.export import export_repository
from serving.triton.server import ServerOptions, TritonServer
from stream.dev.broker import TansuBroker, create_topics
from stream.dev.produce import producer
from stream.dev.testing import read_topic
from stream.events import DeadLetterHeaders, utc_now
from stream.runners.learner_runner import serve_learner
from stream.settings import StreamSettings

PARTITIONS = 2


def _event(path: Path, label: str, reviewer: str = "rev-a", **kw: object) -> bytes:
    doc: dict[str, object] = {
        "image_id": path.stem,
        "content_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "uri": path.as_uri(),
        "label": label,
        "reviewer": reviewer,
        "decided_at": utc_now().isoformat(),
    }
    doc.update(kw)
    return json.dumps(doc).encode()


def _key(value: bytes) -> bytes:
    """The content sha256 (the topic's key); the broken event has its own."""
    try:
        return str(json.loads(value)["content_sha256"]).encode()
    except json.JSONDecodeError:
        return b"broken"


def _settings(
    bootstrap: str, grpc: str, artifacts: Path, bank: Path, topic: str
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
                "artifacts_dir": artifacts,
                "bank_dir": bank,
                "reviewer_max_events": 6,
            },
        }
    )


async def _learn_until(
    settings: StreamSettings, applied: int, timeout_s: float
) -> None:
    """Run the learner until its checkpoint covers `applied` records in all."""
    stop = asyncio.Event()
    task = asyncio.create_task(serve_learner(settings, stop))
    manifest = settings.learner.bank_dir / MANIFEST_FILE
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    try:
        while loop.time() < deadline and not task.done():
            if manifest.exists():
                offsets = json.loads(manifest.read_text())["offsets"]
                if sum(o + 1 for o in offsets.values()) >= applied:
                    break
            await asyncio.sleep(0.2)
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


def _feedback(images_dir: Path) -> list[bytes]:
    """3 reals, 3 fakes, a duplicate, a relabel, two bad events."""
    reals = sorted(images_dir.glob("real_*"))[:3]
    fakes = sorted(images_dir.glob("fake_*"))[:3]
    events = [_event(p, "real") for p in reals] + [
        _event(p, "ai_generated") for p in fakes
    ]
    events += [
        _event(fakes[0], "ai_generated"),  # duplicate: no new row
        _event(reals[0], "ai_generated", reviewer="rev-b"),  # relabel: latest wins
        b'{"image_id": "broken", ',  # bad_json
        _event(reals[1], "real", reviewer="rev-b", content_sha256="0" * 64),
    ]
    return events


async def test_e2e_feedback_grows_the_bank_and_replay_is_bit_identical(
    broker: TansuBroker,
    triton: TritonServer,
    artifacts: Path,
    images_dir: Path,
    tmp_path: Path,
) -> None:
    topic = f"feedback.{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, [topic, topic + ".dlq"], PARTITIONS)
    events = _feedback(images_dir)
    prod = producer(broker.bootstrap)
    await prod.start()
    for value in events:
        await (await prod.send(topic, value, key=_key(value)))
    await prod.stop()

    grpc = triton.grpc_url
    first = _settings(broker.bootstrap, grpc, artifacts, tmp_path / "bank", topic)
    await _learn_until(first, len(events), 300)
    bank = FeedbackBank.load(first.learner.bank_dir)
    assert len(bank) == 6  # 3 reals + 3 fakes; duplicate and relabel add no row
    assert bank.counts() == {"ai_generated": 4, "real": 2}
    dlq = await read_topic(
        broker.bootstrap, topic + ".dlq", PARTITIONS, lambda r: len(r) >= 2
    )
    classes = sorted(DeadLetterHeaders.from_kafka(r.headers).error_class for r in dlq)
    assert classes == ["bad_json", "checksum_mismatch"]

    replay = _settings(broker.bootstrap, grpc, artifacts, tmp_path / "replay", topic)
    await _learn_until(replay, len(events), 300)
    for name in (MANIFEST_FILE, f"feedback_bank-{bank.version()}.safetensors"):
        original = (first.learner.bank_dir / name).read_bytes()
        assert (replay.learner.bank_dir / name).read_bytes() == original


@pytest.fixture
def live_triton(artifacts: Path, tmp_path: Path) -> Iterator[tuple[TritonServer, Path]]:
    """A tritonserver whose head_knn polls an (initially empty) bank directory."""
    bank = tmp_path / "served-bank"
    bank.mkdir()
    repo = tmp_path / "repo"
    export_repository(artifacts, repo, link_encoder=True, feedback_bank=bank)
    with TritonServer(repo, ServerOptions(), work_dir=tmp_path / "triton") as srv:
        yield srv, bank


def _first_real(images_dir: Path) -> tuple[Path, npt.NDArray[np.uint8]]:
    path = sorted(images_dir.glob("real_*"))[0]
    return path, clip_default(Image.open(path).convert("RGB"))[None]


async def test_e2e_served_knn_head_picks_up_a_new_bank_without_restart(
    broker: TansuBroker,
    live_triton: tuple[TritonServer, Path],
    artifacts: Path,
    images_dir: Path,
) -> None:
    srv, bank_dir = live_triton
    (real, pixels), pid = _first_real(images_dir), srv.pid
    topic = f"feedback.{uuid.uuid4().hex[:8]}"
    await create_topics(broker.bootstrap, [topic, topic + ".dlq"], PARTITIONS)
    async with TritonDetectorClient(srv.grpc_url) as client:
        (before,) = await client.detect(pixels)
        assert not any("feedback/" in e for e in before.nearest_exemplars)
        prod = producer(broker.bootstrap)
        await prod.start()
        value = _event(real, "ai_generated")  # a reviewer calls this photo fake
        await (await prod.send(topic, value, key=_key(value)))
        await prod.stop()
        settings = _settings(broker.bootstrap, srv.grpc_url, artifacts, bank_dir, topic)
        await _learn_until(settings, 1, 120)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        after = before
        while (
            loop.time() - t0 < 10
            and after.nearest_exemplars == before.nearest_exemplars
        ):
            await asyncio.sleep(0.25)
            (after,) = await client.detect(pixels)
    sha = json.loads(value)["content_sha256"]
    # the photo is also in the training reals: a tie at 1.0 with its feedback row
    assert f"fake 1.0000 feedback/{sha}" in after.nearest_exemplars
    assert after.head_scores["knn_k1"] > before.head_scores["knn_k1"]
    assert before.bank_version is None
    served = json.loads((bank_dir / MANIFEST_FILE).read_text())["version"]
    assert after.bank_version == served  # the verdict says which bank scored it
    assert srv.pid == pid  # the same server process: no restart
