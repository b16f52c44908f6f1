from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEncoder, synthetic_features

from serving.artifacts import EncoderRecord, load_artifacts, write_artifacts
from serving.detector import Detector
from serving.errors import InvalidInputError
from serving.references import fit_references, knn_head
from serving.scoring.novelty import (
    REASON_NOVEL,
    Novelty,
    apply_reasons,
    fit_novelty,
    novelty_reasons,
)
from serving.workflows import HeadOptions, calibrate_heads, fit_decision, fit_heads

FAST = HeadOptions(mlp_epochs=2, mlp_batch_size=32)


def test_fit_novelty_is_the_lower_order_statistic_in_any_order() -> None:
    sims = np.linspace(0.0, 0.99, 100)
    rng = np.random.default_rng(0)
    got = fit_novelty(rng.permutation(sims), quantile=0.05)
    assert got == Novelty(threshold=float(sims[4]), quantile=0.05, n_cal=100)
    # below the threshold: 4 of 100 calibration images, under the 5 % level
    assert np.mean(sims < got.threshold) <= 0.05


@pytest.mark.parametrize("quantile", [0.0, 1.0, -0.1])
def test_fit_novelty_rejects_a_quantile_outside_the_open_unit_interval(
    quantile: float,
) -> None:
    with pytest.raises(InvalidInputError):
        fit_novelty([0.5, 0.6], quantile)


def test_novelty_reasons_mark_only_images_below_the_threshold() -> None:
    rule = Novelty(threshold=0.5, quantile=0.01, n_cal=10)
    reasons = novelty_reasons(rule, [0.49, 0.5, 0.9])
    assert reasons == [(REASON_NOVEL,), (), ()]
    labels = apply_reasons(["ai_generated", "real", "real"], reasons)
    assert list(labels) == ["uncertain", "real", "real"]


def test_novelty_is_off_without_a_manifest_threshold() -> None:
    assert novelty_reasons(None, [-1.0, 0.0]) == [(), ()]


def test_novelty_record_round_trips() -> None:
    rule = Novelty(threshold=0.25, quantile=0.01, n_cal=7)
    assert Novelty.from_dict(rule.to_dict()) == rule
    with pytest.raises(InvalidInputError):
        Novelty.from_dict({"threshold": 0.1})


def _artifacts(out: Path, with_references: bool) -> None:
    train, cal = synthetic_features(seed=0), synthetic_features(seed=1)
    heads = fit_heads(train, ("knn_k1", "linear_probe"), FAST)
    rule = fit_decision("linear_probe", heads, cal, FAST)
    refs = fit_references(heads, cal.x, rule) if with_references else None
    record = EncoderRecord.from_info(FakeEncoder().info, "clip_default@1")
    cals = calibrate_heads(heads, cal, FAST)
    write_artifacts(out, record, heads, cals, rule, {}, refs)


def test_manifest_stores_novelty_and_score_reference(tmp_path: Path) -> None:
    _artifacts(tmp_path, with_references=True)
    arts = load_artifacts(tmp_path)
    assert arts.novelty is not None
    assert (arts.novelty.quantile, arts.novelty.n_cal) == (0.01, 240)
    ref = arts.manifest.drift_reference()
    assert ref is not None
    assert sum(ref.proportions) == pytest.approx(1.0)
    # far from every exemplar of both banks: novel
    knn = knn_head(arts.heads)
    assert knn is not None
    far = -synthetic_features(n_per_class=1, seed=5).x
    assert (knn.bank_similarity(far) < arts.novelty.threshold).all()


def test_manifest_without_references_loads_with_novelty_off(tmp_path: Path) -> None:
    _artifacts(tmp_path, with_references=False)
    arts = load_artifacts(tmp_path)
    assert arts.novelty is None
    assert arts.manifest.drift_reference() is None


def test_detector_answers_novel_images_uncertain_with_the_reason(
    tmp_path: Path,
) -> None:
    _artifacts(tmp_path, with_references=True)
    arts = load_artifacts(tmp_path)
    pixels = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), np.uint8)
    # every cosine is <= 1: a threshold of 2 makes every image novel
    everything_novel = replace(arts, novelty=Novelty(2.0, 0.01, 1))
    got = Detector(FakeEncoder(), everything_novel, "clip_default").score_pixels(pixels)
    assert [(d.label, d.reasons) for d in got] == [("uncertain", ("novel",))] * 3
    off = Detector(FakeEncoder(), replace(arts, novelty=None), "clip_default")
    assert all(d.reasons == () for d in off.score_pixels(pixels))
