"""The RINE head: numpy scoring vs the torch eval-mode forward, training, artifacts."""

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
from serving.heads.rine import WEIGHTS_FILE, RineHead, RineTrainConfig
from serving.scoring.metrics import roc_auc
from serving.scoring.rine import rine_logit
from serving.scoring.views import FeatureLayout, FeatureView, Norm
from serving.training.rine import RineNet, supcon_loss, to_rine_params, train_rine

LAYOUT = FeatureLayout(embed_dim=8, n_blocks=4, block_dim=16)
FAST = RineTrainConfig(proj_dim=16, max_epochs=6, patience=3, batch_size=32)
# small batches and light dropout: RINE's 0.5 needs more steps than a toy set gives
LEARN = RineTrainConfig(proj_dim=32, max_epochs=20, batch_size=32, dropout=0.1)


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


@dataclass(frozen=True)
class Grouped(LabeledFeatures):
    """`LabeledFeatures` with a generator family per row (until the base has it)."""

    groups: tuple[str, ...] = ()


def _view(norm: Norm = "l2") -> FeatureView:
    return FeatureView(LAYOUT, source="blocks", norm=norm)


def _toy(seed: int, n: int = 96, families: int = 3, signal: float = 1.5) -> Grouped:
    """Flat rows; fakes are shifted along one direction of block 2 (scaled tokens)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n, dtype=np.int64) % 2
    blocks = rng.normal(size=(n, LAYOUT.n_blocks, LAYOUT.block_dim)) * 3.0
    direction = np.linspace(-1.0, 1.0, LAYOUT.block_dim)
    blocks[:, 2, :] += signal * 3.0 * y[:, None] * direction
    emb = rng.normal(size=(n, LAYOUT.embed_dim))
    x = LAYOUT.flatten(emb.astype(np.float32), blocks.astype(np.float32))
    groups = tuple(f"fam{(i // 2) % families}" for i in range(n))
    ids = tuple(f"s{seed}/img{i}.png" for i in range(n))
    return Grouped(x, y, ids, groups)


def _plain(data: Grouped) -> LabeledFeatures:
    return LabeledFeatures(data.x, data.y, data.ids)


def _torch_logits(head: RineHead, x: FloatArray) -> FloatArray:
    with torch.no_grad():
        out: FloatArray = head.to_torch()(torch.from_numpy(head.view.apply(x))).numpy()
    return out


@pytest.mark.parametrize("norm", ["l2", "none"])
def test_rine_numpy_matches_torch_eval_forward(norm: Norm) -> None:
    head = RineHead(_view(norm), FAST)
    head.fit(_toy(0), _plain(_toy(1)))
    x = _toy(2).x
    np.testing.assert_allclose(head.score(x), _torch_logits(head, x), atol=1e-5)


def test_rine_numpy_matches_torch_on_a_fresh_net_with_real_shapes() -> None:
    torch.manual_seed(0)
    net = RineNet(12, 768, proj_dim=128, n_proj=2, n_head=2).eval()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 12 * 768)).astype(np.float32)
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(rine_logit(x, to_rine_params(net)), want, atol=1e-5)


@pytest.mark.parametrize("n", [2, 7, 64])
def test_rine_logit_of_a_row_is_independent_of_its_batch(n: int) -> None:
    torch.manual_seed(n)
    params = to_rine_params(RineNet(12, 768, proj_dim=128))
    x = np.random.default_rng(n).normal(size=(n, 12 * 768)).astype(np.float32)
    singles = np.concatenate([rine_logit(x[i : i + 1], params) for i in range(n)])
    np.testing.assert_array_max_ulp(rine_logit(x, params), singles, maxulp=1)


def test_rine_head_learns_separable_toy_and_uses_the_holdout_family() -> None:
    head = RineHead(_view(), LEARN)
    train = _toy(0, n=240)
    head.fit(train, _plain(_toy(1)))
    test = _toy(2, n=128)
    assert roc_auc(test.y, head.score(test.x)) > 0.95
    assert head.holdout_family == "fam0"  # most fakes; ties broken by name
    assert head.summary is not None
    assert head.refit_epochs is not None
    assert head.refit_epochs == head.summary.best_epoch + 1
    assert head.summary.best_val_auc == max(head.summary.val_auc_history)


def test_rine_head_without_groups_early_stops_on_val() -> None:
    head = RineHead(_view(), FAST)
    head.fit(_plain(_toy(0)), _plain(_toy(1)))
    assert head.holdout_family is None
    assert head.refit_epochs is None
    assert head.summary is not None
    assert head.summary.epochs_run >= 1


def test_rine_holdout_family_can_be_named_and_must_exist() -> None:
    head = RineHead(
        _view(), RineTrainConfig(**{**FAST.to_dict(), "holdout_family": "fam2"})
    )
    head.fit(_toy(0), _toy(1))
    assert head.holdout_family == "fam2"
    bad = RineHead(
        _view(), RineTrainConfig(**{**FAST.to_dict(), "holdout_family": "x"})
    )
    with pytest.raises(InvalidInputError):
        bad.fit(_toy(0), _toy(1))


def test_rine_head_save_load_roundtrip_without_pickle(tmp_path: Path) -> None:
    head = RineHead(_view("none"), FAST)
    head.fit(_toy(0), _plain(_toy(1)))
    params = head.save(tmp_path)
    json.dumps(params)  # manifest parameters are plain JSON
    assert sorted(p.name for p in tmp_path.iterdir()) == [WEIGHTS_FILE]
    loaded = RineHead.load(tmp_path, json.loads(json.dumps(params)))
    x = _toy(2).x
    assert loaded.view.to_dict() == head.view.to_dict()
    assert np.array_equal(loaded.score(x), head.score(x))
    np.testing.assert_allclose(loaded.score(x), _torch_logits(loaded, x), atol=1e-5)


def test_rine_head_scores_and_loads_without_torch(tmp_path: Path) -> None:
    head = RineHead(_view(), FAST)
    head.fit(_toy(0), _plain(_toy(1)))
    (tmp_path / "params.json").write_text(json.dumps(head.save(tmp_path)))
    x = _toy(2).x
    np.save(tmp_path / "x.npy", x)
    code = (
        "import json, sys; import numpy as np; from pathlib import Path;"
        "from serving.heads.rine import RineHead; d = Path(sys.argv[1]);"
        "h = RineHead.load(d, json.loads((d / 'params.json').read_text()));"
        "np.save(d / 'out.npy', h.score(np.load(d / 'x.npy')));"
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True)
    assert np.array_equal(np.load(tmp_path / "out.npy"), head.score(x))


def test_rine_load_rejects_a_mismatched_manifest(tmp_path: Path) -> None:
    head = RineHead(_view(), FAST)
    head.fit(_toy(0), _plain(_toy(1)))
    params = head.save(tmp_path)
    with pytest.raises(ArtifactMismatchError):
        RineHead.load(tmp_path, {**params, "config": {**params["config"], "n_proj": 3}})
    with pytest.raises(ArtifactMismatchError):
        RineHead.load(tmp_path, {**params, "dim": params["dim"] + 1})


def test_rine_head_needs_a_blocks_view() -> None:
    with pytest.raises(InvalidInputError):
        RineHead(FeatureView(LAYOUT, source="embeds"))


def test_rine_score_before_fit_raises() -> None:
    with pytest.raises(InvalidInputError):
        RineHead(_view()).score(_toy(0).x)


@pytest.mark.parametrize(
    "kwargs", [{"proj_dim": 0}, {"dropout": 1.0}, {"bce_reduction": "max"}]
)
def test_rine_config_rejects_bad_values(kwargs: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        RineTrainConfig(**kwargs)  # type: ignore[arg-type]


def test_supcon_matches_the_definition() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 5))
    y = np.array([0, 0, 1, 1, 1, 0])
    f = z / np.linalg.norm(z, axis=1, keepdims=True)
    s = f @ f.T / 0.07
    losses = []
    for i in range(6):
        others = [j for j in range(6) if j != i]
        log_den = np.log(np.exp(s[i, others]).sum())
        pos = [j for j in others if y[j] == y[i]]
        losses.append(-np.mean([s[i, j] - log_den for j in pos]))
    got = supcon_loss(torch.from_numpy(z), torch.from_numpy(y).double(), 0.07)
    assert float(got) == pytest.approx(float(np.mean(losses)), rel=1e-9)


def test_supcon_is_zero_without_positives() -> None:
    z = torch.randn(2, 3, requires_grad=True)
    loss = supcon_loss(z, torch.tensor([0.0, 1.0]))
    torch.autograd.backward(loss)
    assert float(loss) == 0.0


def test_train_rine_refit_runs_the_given_epochs() -> None:
    data = _toy(0)
    x = _view().apply(data.x)
    result = train_rine(x, data.y, LAYOUT.n_blocks, config=FAST, epochs=2)
    assert result.summary.epochs_run == 2
    assert not result.net.training
