from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.feedback_bank import FeedbackBank, FeedbackRecord
from serving.heads.base import FloatArray, Head, LabeledFeatures
from serving.heads.knn import FeedbackBankWatch, KnnHead
from serving.heads.linear import LinearProbeHead
from serving.heads.mlp import MlpHead
from serving.index.faiss_index import FaissBank
from serving.scoring.metrics import roc_auc
from serving.scoring.mlp import mlp_logit
from serving.scoring.views import FeatureLayout, FeatureView
from serving.training.configs import LinearProbeConfig
from serving.training.mlp import LossName, MlpTrainConfig, to_mlp_params, train_mlp

D = 16
PROBE_CFG = LinearProbeConfig(lr=1e-2, batch_size=32, max_epochs=100)
# the toy rows are the embedding itself: a layout without blocks, raw embeds
EMBEDS = FeatureView(FeatureLayout(D, 0, 0), source="embeds", norm="none")


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _toy(seed: int, n: int = 64, offset: float = 2.0) -> LabeledFeatures:
    """Raw-feature-like toy set (uneven scales, offset); fakes 1 sigma off per dim."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 2
    scale = np.linspace(0.5, 3.0, D)
    x = rng.normal(size=(n, D)) * scale + offset
    x += scale * y[:, None]
    ids = tuple(f"s{seed}/img{i}.jpg" for i in range(n))
    return LabeledFeatures(x.astype(np.float32), y, ids)


def _xy(data: LabeledFeatures) -> tuple[FloatArray, npt.NDArray[np.int64]]:
    return data.x, data.y


def _unit(x: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    x64 = x.astype(np.float64)
    out: npt.NDArray[np.float64] = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    return out


@pytest.mark.parametrize("k", [1, 3, 5, 9])
def test_knn_head_matches_brute_force_cosine(k: int) -> None:
    train, query = _toy(0), _toy(1).x
    head = KnnHead(EMBEDS, k)
    head.fit(train, train)
    sims = _unit(query) @ _unit(train.x).T
    top = {c: -np.sort(-sims[:, train.y == c], axis=1)[:, :k].mean(1) for c in (0, 1)}
    np.testing.assert_allclose(head.score(query), top[1] - top[0], atol=1e-5)


def test_knn_head_k1_is_univfd_distance_margin() -> None:
    train, query = _toy(0), _toy(2).x
    head: Head = KnnHead(EMBEDS, 1)
    head.fit(train, train)
    d = 1.0 - _unit(query) @ _unit(train.x).T
    want = d[:, train.y == 0].min(1) - d[:, train.y == 1].min(1)
    np.testing.assert_allclose(head.score(query), want, atol=1e-5)


def test_knn_head_neighbours_are_nearest_ids_ties_tolerated() -> None:
    train, query = _toy(0), _toy(3).x[:5]
    head = KnnHead(EMBEDS, 3)
    head.fit(train, train)
    sims = _unit(query) @ _unit(train.x).T
    by_id = dict(zip(train.ids, range(len(train.ids)), strict=True))
    for q, hits in enumerate(head.neighbours(query)):
        assert len(hits) == 6
        label, sim, img = hits[0].split(" ", 2)
        assert label in {"real", "fake"}
        assert float(sim) == pytest.approx(sims[q].max(), abs=1e-4)
        assert sims[q, by_id[img]] == pytest.approx(sims[q].max(), abs=1e-5)


def test_knn_head_answer_is_one_search_read_three_ways() -> None:
    train, query = _toy(0), _toy(3).x[:7]
    head = KnnHead(EMBEDS, 3)
    head.fit(train, train)
    sims = _unit(query) @ _unit(train.x).T
    found = head.answer(query)
    assert np.array_equal(found.scores, head.score(query))
    assert found.neighbours == head.neighbours(query)
    np.testing.assert_allclose(found.similarity, sims.max(axis=1), atol=1e-5)
    assert found.scores.dtype == found.similarity.dtype == np.float32


def test_knn_head_save_load_roundtrip(tmp_path: Path) -> None:
    train, query = _toy(0), _toy(1).x
    head = KnnHead(EMBEDS, 5)
    head.fit(train, train)
    params = head.save(tmp_path)
    loaded = KnnHead.load(tmp_path, params)
    assert params["bank_sizes"] == {"real": 32, "fake": 32}
    assert np.array_equal(loaded.score(query), head.score(query))
    assert loaded.neighbours(query[:3]) == head.neighbours(query[:3])


@pytest.mark.parametrize("k", [0, 2, 4, 10])
def test_knn_head_rejects_unsupported_k(k: int) -> None:
    with pytest.raises(InvalidInputError):
        KnnHead(EMBEDS, k)


def test_knn_head_load_rejects_size_mismatch(tmp_path: Path) -> None:
    head = KnnHead(EMBEDS, 1)
    head.fit(_toy(0), _toy(0))
    params = head.save(tmp_path)
    params["bank_sizes"]["fake"] = 31
    with pytest.raises(ArtifactMismatchError):
        KnnHead.load(tmp_path, params)


def test_faiss_bank_search_matches_brute_force_with_ties(tmp_path: Path) -> None:
    xb = np.repeat(np.random.default_rng(0).normal(size=(8, D)), 2, axis=0)
    bank = FaissBank(D)
    bank.add(xb.astype(np.float32))
    xq = np.random.default_rng(1).normal(size=(4, D)).astype(np.float32)
    sims, rows = bank.search(xq, 4)
    brute = _unit(xq) @ _unit(xb).T
    np.testing.assert_allclose(sims, -np.sort(-brute, axis=1)[:, :4], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(brute, rows, 1), sims, atol=1e-5)
    bank.save(tmp_path / "bank.safetensors")
    loaded = FaissBank.load(tmp_path / "bank.safetensors", D)
    assert np.array_equal(loaded.search(xq, 4)[0], sims)


def test_linear_probe_head_numpy_matches_torch() -> None:
    head = LinearProbeHead(EMBEDS, LinearProbeConfig(max_epochs=3), "univfd")
    head.fit(_toy(0), _toy(1))
    x = _toy(2).x
    with torch.no_grad():
        want = head.to_torch()(torch.from_numpy(x)).squeeze(1).numpy()
    np.testing.assert_allclose(head.score(x), want, atol=1e-5)


def test_linear_probe_head_learns_separable_toy() -> None:
    # centred: Adam on an offset logistic problem needs far more steps than a test
    head = LinearProbeHead(EMBEDS, PROBE_CFG, "univfd")
    head.fit(_toy(0, n=256, offset=0.0), _toy(1, n=256, offset=0.0))
    test = _toy(2, n=128, offset=0.0)
    assert roc_auc(test.y, head.score(test.x)) > 0.95
    assert head.summary is not None
    assert head.summary["epochs_run"] == len(head.summary["lr_history"])


def test_linear_probe_logreg_cv_learns_offset_toy_and_records_choice() -> None:
    # the default recipe standardises, so the offset that slows Adam does not matter
    train = _toy(0, n=256)
    groups = tuple("abc"[i % 3] for i in range(256))
    head = LinearProbeHead(EMBEDS)
    head.fit(LabeledFeatures(train.x, train.y, train.ids, groups), _toy(1))
    test = _toy(2, n=128)
    assert roc_auc(test.y, head.score(test.x)) > 0.95
    assert head.summary is not None
    assert head.summary["cv"] == "leave_one_family_out"
    assert head.summary["c"] in head.logreg.c_grid
    assert len(head.summary["cv_auc"]) == len(head.logreg.c_grid)


def test_linear_probe_reads_its_view_of_flat_rows() -> None:
    layout = FeatureLayout(4, 2, 3)
    view = FeatureView(layout, "blocks", blocks=(1,), norm="l2")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, layout.width)).astype(np.float32)
    w = np.arange(3, dtype=np.float32)
    head = LinearProbeHead.from_weights(view, w, 0.5)
    block1 = x[:, 4 + 3 :]
    block1 = block1 / np.linalg.norm(block1, axis=1, keepdims=True)
    np.testing.assert_allclose(head.score(x), block1 @ w + 0.5, atol=1e-6)


def test_linear_probe_head_save_load_roundtrip(tmp_path: Path) -> None:
    head = LinearProbeHead(EMBEDS, LinearProbeConfig(max_epochs=2), "univfd")
    head.fit(_toy(0), _toy(1))
    params = head.save(tmp_path)
    x = _toy(2).x
    assert params["dim"] == D
    assert np.array_equal(
        LinearProbeHead.load(tmp_path, params).score(x), head.score(x)
    )


def test_mlp_trainer_folded_numpy_matches_torch() -> None:
    result = train_mlp(
        *_xy(_toy(0)), *_xy(_toy(1)), MlpTrainConfig(epochs=2, batch_size=16)
    )
    x = _toy(2).x
    with torch.no_grad():
        want = result.model(torch.from_numpy(x)).numpy()
    assert not result.model.training
    np.testing.assert_allclose(
        mlp_logit(x, to_mlp_params(result.model)), want, atol=1e-5
    )


@pytest.mark.parametrize("loss", ["cvar_auc", "bce"])
def test_mlp_head_learns_separable_toy(loss: LossName) -> None:
    # lr 1e-2: the default 1e-3 needs more steps than this tiny set gives
    cfg = MlpTrainConfig(epochs=10, batch_size=32, lr=1e-2, loss=loss)
    head = MlpHead(EMBEDS, cfg)
    head.fit(_toy(0, n=256), _toy(1))
    test = _toy(2, n=128)
    assert roc_auc(test.y, head.score(test.x)) > 0.95
    assert head.summary is not None
    assert head.summary.best_val_auc == max(head.summary.val_auc_history)


def test_mlp_head_save_load_roundtrip(tmp_path: Path) -> None:
    head = MlpHead(EMBEDS, MlpTrainConfig(epochs=2, batch_size=32))
    head.fit(_toy(0), _toy(1))
    params = head.save(tmp_path)
    loaded = MlpHead.load(tmp_path, params)
    assert params["view"] == EMBEDS.to_dict()
    x = _toy(2).x
    assert np.array_equal(loaded.score(x), head.score(x))
    with torch.no_grad():
        want = loaded.to_torch()(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(loaded.score(x), want, atol=1e-5)


def test_mlp_config_rejects_unknown_loss() -> None:
    with pytest.raises(InvalidInputError):
        MlpTrainConfig(loss="hinge")  # type: ignore[arg-type]


def test_knn_with_feedback_adds_rows_and_the_watch_picks_up_new_versions(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((20, 6)).astype(np.float32)
    y = np.repeat([0, 1], 10).astype(np.int64)
    base = KnnHead(FeatureView(FeatureLayout(6, 0, 0), "embeds", norm="none"), k=1)
    base.fit(LabeledFeatures(x, y), LabeledFeatures(x, y))
    query = rng.standard_normal((1, 6)).astype(np.float32)
    watch = FeedbackBankWatch(base, tmp_path, poll_s=0.0)
    assert watch.current() is base  # no checkpoint yet
    bank = FeedbackBank(6, max_rows=5)
    bank.apply(FeedbackRecord(0, 0, "a" * 64, "ai_generated", 1, query[0]))
    bank.save(tmp_path)
    head = watch.current()
    assert head.feedback_version == bank.version()
    assert head.neighbours(query)[0][0] == f"fake 1.0000 feedback/{'a' * 64}"
    assert head.score(query)[0] > base.score(query)[0]
    assert base.neighbours(query)[0][0].split()[-1].startswith("train/")
