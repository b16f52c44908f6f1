from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from serving.errors import ArtifactMismatchError
from serving.feedback_bank import (
    MANIFEST_FILE,
    FeedbackBank,
    FeedbackRecord,
    bank_geometry,
)

DIM = 8


def _rec(
    partition: int, offset: int, image: int, label: str = "ai_generated", age: int = 0
) -> FeedbackRecord:
    sha = hashlib.sha256(str(image).encode()).hexdigest()
    row = np.random.default_rng(image).standard_normal(DIM).astype(np.float32)
    return FeedbackRecord(partition, offset, sha, label, age or offset, row)  # type: ignore[arg-type]


def _log(rng: np.random.Generator, n: int = 60) -> list[FeedbackRecord]:
    """Two partitions; an image always lands on the same one (the sha key)."""
    counters = [0, 0]
    out = []
    for _ in range(n):
        image = int(rng.integers(0, 25))
        part = image % 2
        label = "real" if rng.random() < 0.5 else "ai_generated"
        age = int(rng.integers(1, 1000))
        out.append(_rec(part, counters[part], image, label, age))
        counters[part] += 1
    return out


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir())}


def test_feedback_bank_latest_label_wins_and_duplicates_do_not_grow() -> None:
    bank = FeedbackBank(DIM, max_rows=10)
    assert bank.apply(_rec(0, 0, 1, "ai_generated")) == "applied"
    assert bank.apply(_rec(0, 1, 1, "ai_generated")) == "duplicate"
    assert bank.apply(_rec(0, 2, 1, "real")) == "relabelled"
    assert bank.apply(_rec(0, 2, 2)) == "stale"
    assert len(bank) == 1
    assert bank.counts() == {"ai_generated": 0, "real": 1}


def test_feedback_bank_cap_evicts_oldest_age_first() -> None:
    bank = FeedbackBank(DIM, max_rows=2)
    for off, (image, age) in enumerate([(1, 30), (2, 10), (3, 20)]):
        bank.apply(_rec(0, off, image, age=age))
    kept = set(bank.rows("ai_generated")[1])
    assert kept == {_rec(0, 0, 1).content_sha256, _rec(0, 0, 3).content_sha256}


def test_feedback_bank_replay_is_bit_identical_for_any_interleaving(
    tmp_path: Path,
) -> None:
    log = _log(np.random.default_rng(0))
    by_part = [[r for r in log if r.partition == p] for p in (0, 1)]
    outputs = []
    for seed in range(4):
        rng, bank = np.random.default_rng(seed), FeedbackBank(DIM, max_rows=9)
        queues = [list(q) for q in by_part]
        while any(queues):
            q = queues[int(rng.integers(0, 2))] or queues[0] or queues[1]
            bank.apply(q.pop(0))
        bank.save(tmp_path / str(seed))
        outputs.append(_files(tmp_path / str(seed)))
    assert all(o == outputs[0] for o in outputs)
    assert len(FeedbackBank.load(tmp_path / "0")) == 9


def test_feedback_bank_resume_skips_applied_offsets(tmp_path: Path) -> None:
    log = _log(np.random.default_rng(1))
    whole = FeedbackBank(DIM, max_rows=50)
    for r in log:
        whole.apply(r)
    half = FeedbackBank(DIM, max_rows=50)
    for r in log[:30]:
        half.apply(r)
    half.save(tmp_path / "half")
    resumed = FeedbackBank.open(tmp_path / "half", DIM, 50)
    outcomes = [resumed.apply(r) for r in log]  # redelivered from offset 0
    assert outcomes[:30] == ["stale"] * 30
    assert resumed.version() == whole.version()
    assert resumed.offsets == whole.offsets


def test_feedback_bank_load_rejects_tampered_rows(tmp_path: Path) -> None:
    bank = FeedbackBank(DIM, max_rows=5)
    bank.apply(_rec(0, 0, 1))
    bank.save(tmp_path)
    (data,) = tmp_path.glob("feedback_bank-*.safetensors")
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ArtifactMismatchError, match="sha256"):
        FeedbackBank.load(tmp_path)
    assert (tmp_path / MANIFEST_FILE).exists()


def test_feedback_bank_save_keeps_only_the_current_file(tmp_path: Path) -> None:
    bank = FeedbackBank(DIM, max_rows=5)
    bank.apply(_rec(0, 0, 1))
    bank.save(tmp_path)
    bank.apply(_rec(0, 1, 2))
    version = bank.save(tmp_path)
    names = {f"feedback_bank-{version}.safetensors", MANIFEST_FILE}
    assert set(_files(tmp_path)) == names


def test_bank_geometry_needs_a_knn_head(tmp_path: Path) -> None:
    doc = {
        "encoder": {"embed_dim": 4, "n_blocks": 0, "block_dim": 0, "policy": "p@1"},
        "heads": {"probe": {"kind": "linear_probe", "params": {}}},
    }
    (tmp_path / "manifest.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactMismatchError, match="no kNN head"):
        bank_geometry(tmp_path)
    with pytest.raises(ArtifactMismatchError):
        bank_geometry(tmp_path / "absent")
