from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry

from serving.feedback_bank import FeedbackBank
from stream import names
from stream.dev.testing import jpeg_bytes
from stream.events import SourceRef, utc_now
from stream.learner import Learner, LearnerMetrics, ReviewerRateLimit
from stream.records import Failure, Incoming

DIM = 4


class FakeRowEncoder:
    async def rows(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        flat = images.reshape(len(images), -1, 3).astype(np.float32)
        return np.concatenate([flat.mean(axis=1), flat.std(axis=1)[:, :1]], axis=1)


def _jpeg(i: int) -> bytes:
    return jpeg_bytes((20 * i % 256, 30, 200 - 10 * i))


def _learner(max_events: int = 10) -> Learner:
    return Learner(
        bank=FeedbackBank(DIM, max_rows=100),
        encoder=FakeRowEncoder(),
        policy=Learner.policy_of("clip_default@1"),
        limit=ReviewerRateLimit(max_events, window_ms=60_000),
        metrics=LearnerMetrics(CollectorRegistry()),
    )


def _incoming(offset: int, data: bytes, **kw: object) -> Incoming:
    doc: dict[str, object] = {
        "image_id": f"img-{offset}",
        "content_sha256": hashlib.sha256(data).hexdigest(),
        "data_b64": base64.b64encode(data).decode(),
        "label": "ai_generated",
        "reviewer": "rev-1",
        "decided_at": utc_now().isoformat(),
    }
    doc.update(kw)
    src = SourceRef(topic=names.FEEDBACK_TOPIC, partition=0, offset=offset)
    return Incoming(json.dumps(doc).encode(), src, timestamp_ms=1_000 + offset)


async def test_learner_appends_rows_and_duplicates_do_not_grow() -> None:
    learner, a, b = _learner(), _jpeg(1), _jpeg(2)
    assert await learner.handle(_incoming(0, a)) == "applied"
    assert await learner.handle(_incoming(1, a)) == "duplicate"
    assert await learner.handle(_incoming(2, b, label="real")) == "applied"
    assert await learner.handle(_incoming(2, b)) == "stale"
    assert learner.bank.counts() == {"ai_generated": 1, "real": 1}


async def test_learner_sends_bad_feedback_to_the_dlq_with_typed_errors() -> None:
    learner, data = _learner(), _jpeg(1)
    bad_sha = await learner.handle(_incoming(0, data, content_sha256="0" * 64))
    bad_json = await learner.handle(
        Incoming(b"{", SourceRef(topic="t", partition=0, offset=1))
    )
    garbage = b"not an image"
    undecodable = await learner.handle(_incoming(2, garbage))
    classes = [
        (f.error_class, f.stage)
        for f in (bad_sha, bad_json, undecodable)
        if isinstance(f, Failure)
    ]
    assert classes[:2] == [("checksum_mismatch", "fetch"), ("bad_json", "parse")]
    assert classes[2][1] == "decode"
    assert len(learner.bank) == 0
    assert learner.bank.offsets == {0: 2}


async def test_learner_rate_limits_per_reviewer_and_counts_them() -> None:
    learner = _learner(max_events=2)
    outs = [await learner.handle(_incoming(i, _jpeg(i))) for i in range(3)]
    other = await learner.handle(_incoming(3, _jpeg(9), reviewer="rev-2"))
    assert isinstance(outs[2], Failure)
    assert outs[2].error_class == "rate_limited"
    assert other == "applied"
    sample = learner.metrics.registry.get_sample_value
    metric = names.LEARNER_METRIC_FEEDBACK
    assert sample(metric, {"reviewer": "rev-1", "outcome": "applied"}) == 2
    assert sample(metric, {"reviewer": "rev-1", "outcome": "rate_limited"}) == 1
    assert sample(metric, {"reviewer": "rev-2", "outcome": "applied"}) == 1


async def test_a_resume_from_the_checkpoint_admits_what_a_full_replay_admits(
    tmp_path: Path,
) -> None:
    events = [_incoming(i, _jpeg(i)) for i in range(4)]  # one reviewer, one window
    full = _learner(max_events=2)
    want = [await full.handle(e) for e in events]
    first = _learner(max_events=2)
    for e in events[:2]:
        await first.handle(e)
    first.checkpoint(tmp_path)
    bank = FeedbackBank.open(tmp_path, DIM, max_rows=100)
    limit = ReviewerRateLimit(2, window_ms=60_000)
    limit.restore(bank.admission)
    resumed = Learner(
        bank=bank,
        encoder=FakeRowEncoder(),
        policy=Learner.policy_of("clip_default@1"),
        limit=limit,
        metrics=LearnerMetrics(CollectorRegistry()),
    )
    got = [await resumed.handle(e) for e in events]
    assert got[:2] == ["stale", "stale"]
    assert [type(o) for o in got[2:]] == [type(o) for o in want[2:]] == [Failure] * 2
    assert resumed.bank.version() == full.bank.version()
    assert limit.state() == full.limit.state() == [["rev-1", 0, 0, 4]]
