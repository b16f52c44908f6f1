"""The Santosh MLP on the layer stack: view, hidden width, hold-out family, artifacts."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.heads.base import FloatArray, LabeledFeatures
from serving.heads.mlp import MlpHead, MlpTrainConfig, holdout_split
from serving.scoring.metrics import roc_auc
from serving.scoring.mlp import mlp_logit
from serving.scoring.views import FeatureLayout, FeatureView, Norm
from serving.training.mlp import MlpDetector, to_mlp_params, train_mlp

LAYOUT = FeatureLayout(embed_dim=8, n_blocks=4, block_dim=16)
FAST = MlpTrainConfig(epochs=4, batch_size=32, hidden_dim=24, patience=2)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@dataclass(frozen=True)
class Grouped(LabeledFeatures):
    """`LabeledFeatures` with a generator family per row (until the base has it)."""

    groups: tuple[str, ...] = ()


def _view(norm: Norm = "l2", blocks: tuple[int, ...] = ()) -> FeatureView:
    return FeatureView(LAYOUT, source="blocks", blocks=blocks, norm=norm)


def _toy(seed: int, n: int = 96, families: int = 3) -> Grouped:
    """Flat rows; fakes are shifted along one direction of block 1."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 2
    blocks = rng.normal(size=(n, LAYOUT.n_blocks, LAYOUT.block_dim)) * 2.0 + 1.0
    blocks[:, 1, :] += 5.0 * y[:, None] * np.linspace(-1.0, 1.0, LAYOUT.block_dim)
    emb = rng.normal(size=(n, LAYOUT.embed_dim))
    x = LAYOUT.flatten(emb.astype(np.float32), blocks.astype(np.float32))
    groups = tuple(f"fam{(i // 2) % families}" for i in range(n))
    return Grouped(x, y, tuple(f"img{i}" for i in range(n)), groups)


def _plain(data: Grouped) -> LabeledFeatures:
    return LabeledFeatures(data.x, data.y, data.ids)


def _torch_logits(head: MlpHead, x: FloatArray) -> FloatArray:
    with torch.no_grad():
        out: FloatArray = head.to_torch()(torch.from_numpy(head.view.apply(x))).numpy()
    return out


def test_first_layer_maps_the_stack_to_the_hidden_width() -> None:
    model = MlpDetector(12 * 768, n_hidden=3, hidden_dim=256)
    shapes = [m.weight.shape for m in model.hidden if isinstance(m, torch.nn.Linear)]
    assert shapes == [(256, 9216), (256, 256), (256, 256)]
    assert model.output_layer.weight.shape == (1, 256)
    assert MlpDetector(16, hidden_dim=None).output_layer.weight.shape == (1, 16)


@pytest.mark.parametrize("norm", ["l2", "none"])
def test_mlp_on_blocks_numpy_matches_torch(norm: Norm) -> None:
    head = MlpHead(_view(norm), FAST)
    head.fit(_toy(0), _plain(_toy(1)))
    x = _toy(2).x
    np.testing.assert_allclose(head.score(x), _torch_logits(head, x), atol=1e-5)


def test_folded_numpy_matches_torch_with_real_shapes_and_batchnorm_stats() -> None:
    torch.manual_seed(0)
    model = MlpDetector(12 * 768, hidden_dim=256, input_dropout=0.2)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(64, 12 * 768)).astype(np.float32))
    model.train()
    with torch.no_grad():
        model(x * 3.0 + 1.0)  # non-trivial BatchNorm running statistics
    model.eval()
    with torch.no_grad():
        want = model(x[:6]).numpy()
    got = mlp_logit(x[:6].numpy(), to_mlp_params(model))
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_mlp_on_blocks_learns_and_early_stops_on_the_holdout_family() -> None:
    cfg = MlpTrainConfig(epochs=12, batch_size=32, lr=1e-2, hidden_dim=32)
    head = MlpHead(_view(), cfg)
    head.fit(_toy(0, n=240), _plain(_toy(1)))
    test = _toy(2, n=128)
    assert roc_auc(test.y, head.score(test.x)) > 0.95
    assert head.holdout_family == "fam0"
    assert head.summary is not None
    assert head.refit_epochs is not None
    assert head.refit_epochs == head.summary.best_epoch + 1


def test_mlp_without_groups_selects_on_val() -> None:
    head = MlpHead(_view(), FAST)
    head.fit(_plain(_toy(0)), _plain(_toy(1)))
    assert head.holdout_family is None
    assert head.refit_epochs is None
    assert head.summary is not None
    assert head.summary.best_val_auc == max(head.summary.val_auc_history)


def test_mlp_patience_stops_early() -> None:
    data, val = _toy(0), _toy(1)
    cfg = MlpTrainConfig(epochs=30, batch_size=32, hidden_dim=8, patience=1, lr=1e-1)
    x, xv = _view().apply(data.x), _view().apply(val.x)
    summary = train_mlp(x, data.y, xv, val.y, cfg).summary
    assert summary.epochs_run == len(summary.val_auc_history)
    assert summary.epochs_run <= summary.best_epoch + 2


def test_mlp_uses_only_the_view_blocks(tmp_path: Path) -> None:
    head = MlpHead(_view(blocks=(1, 3)), FAST)
    head.fit(_toy(0), _plain(_toy(1)))
    x = _toy(2).x.copy()
    before = head.score(x)
    x[:, LAYOUT.embed_dim : LAYOUT.embed_dim + LAYOUT.block_dim] += 5.0  # block 0
    assert np.array_equal(head.score(x), before)
    params = head.save(tmp_path)
    assert params["dim"] == 2 * LAYOUT.block_dim
    assert params["hidden_dim"] == 24


def test_mlp_stack_save_load_roundtrip_without_torch(tmp_path: Path) -> None:
    head = MlpHead(_view(), FAST)
    head.fit(_toy(0), _toy(1))
    (tmp_path / "params.json").write_text(json.dumps(head.save(tmp_path)))
    x = _toy(2).x
    np.save(tmp_path / "x.npy", x)
    code = (
        "import json, sys; import numpy as np; from pathlib import Path;"
        "from serving.heads.mlp import MlpHead; d = Path(sys.argv[1]);"
        "h = MlpHead.load(d, json.loads((d / 'params.json').read_text()));"
        "np.save(d / 'out.npy', h.score(np.load(d / 'x.npy')));"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert np.array_equal(np.load(tmp_path / "out.npy"), head.score(x))
    loaded = MlpHead.load(tmp_path, json.loads((tmp_path / "params.json").read_text()))
    assert loaded.holdout_family == head.holdout_family
    np.testing.assert_allclose(loaded.score(x), _torch_logits(loaded, x), atol=1e-5)


def test_mlp_load_rejects_a_view_of_another_width(tmp_path: Path) -> None:
    head = MlpHead(_view(), FAST)
    head.fit(_toy(0), _plain(_toy(1)))
    params = head.save(tmp_path)
    params["view"] = _view(blocks=(0,)).to_dict()
    with pytest.raises(ArtifactMismatchError):
        MlpHead.load(tmp_path, params)
    del params["view"]
    with pytest.raises(ArtifactMismatchError):
        MlpHead.load(tmp_path, params)


def test_holdout_split_takes_the_family_from_train_and_val() -> None:
    train, val = _toy(0, n=60), _toy(1, n=30)
    split = holdout_split(train, val, _view().apply, "fam1")
    assert split is not None
    assert split.family == "fam1"
    n_train_f = sum(g == "fam1" for g in train.groups)
    n_val_f = sum(g == "fam1" for g in val.groups)
    assert split.stop_x.shape == (n_train_f + n_val_f, _view().dim)
    assert split.fit_x.shape[0] == 60 - n_train_f
    assert set(split.stop_y.tolist()) == {0, 1}


def test_holdout_split_borrows_reals_when_the_family_has_only_fakes() -> None:
    train = _toy(0, n=60)
    groups = tuple(
        "real" if y == 0 else g for y, g in zip(train.y, train.groups, strict=True)
    )
    train = Grouped(train.x, train.y, train.ids, groups)
    split = holdout_split(train, _plain(_toy(1, n=30)), _view().apply)
    assert split is not None
    assert split.family == "fam0"
    assert (split.stop_y == 0).sum() == 15
    assert (split.stop_y == 1).sum() == 10


def test_holdout_split_needs_groups_and_two_fake_families() -> None:
    val = _plain(_toy(1))
    assert holdout_split(_plain(_toy(0)), val, _view().apply) is None
    assert holdout_split(_toy(0, families=1), val, _view().apply) is None
    with pytest.raises(InvalidInputError):
        holdout_split(_toy(0), val, _view().apply, "nope")
