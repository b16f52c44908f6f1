"""Domain: the UnivFD linear-probe trainer ("LC": ``Linear(d, 1)`` on raw features).

As UnivFD ``train.py``: BCE-with-logits, AdamW(lr 1e-4, wd 0), batch 256, early
stopping on validation accuracy at 0.5 with patience 5; on a plateau the LR is
divided by 10 and training goes on, until the LR falls below 1e-6. Unlike UnivFD
(which keeps the drifting weights and uses a tolerant delta of -0.001) we resume
from the best weights and count as improvement only a gain above ``min_delta``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from serving.errors import InvalidInputError
from serving.scoring.metrics import roc_auc
from serving.training.configs import LinearProbeConfig

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class LinearProbeSummary:
    """What happened during training.

    Attributes:
        epochs_run: Epochs trained.
        best_epoch: 0-based epoch of the kept weights.
        best_val_acc: Validation accuracy at 0.5 of the kept weights.
        lr_history: LR used in each epoch.
    """

    epochs_run: int
    best_epoch: int
    best_val_acc: float
    lr_history: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "lr_history": list(self.lr_history)}


@dataclass(frozen=True, eq=False)
class LinearProbeResult:
    """Trained probe: ``logit = x @ weight + bias``.

    Attributes:
        weight: (d,) float32.
        bias: The bias.
        summary: Training summary.
    """

    weight: FloatArray
    bias: float
    summary: LinearProbeSummary


def as_tensors(x: FloatArray, y: LabelArray) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate features/labels and convert them to float32 tensors.

    Args:
        x: (n, d) features, n >= 1.
        y: (n,) labels in {0, 1}.

    Returns:
        ``(x, y)`` as float32 tensors.

    Raises:
        InvalidInputError: Bad shapes, empty, non-finite or non-binary input.
    """
    xa, ya = np.asarray(x, dtype=np.float32), np.asarray(y)
    if xa.ndim != 2 or xa.shape[0] == 0 or ya.shape != (xa.shape[0],):
        raise InvalidInputError(f"need (n, d) x and (n,) y, got {xa.shape}, {ya.shape}")
    if not np.isfinite(xa).all() or not np.isin(ya, (0, 1)).all():
        raise InvalidInputError("x must be finite and y in {0, 1}")
    return torch.from_numpy(xa.copy()), torch.from_numpy(ya.astype(np.float32))


def build_probe(dim: int, init_std: float = 0.02) -> nn.Linear:
    """``nn.Linear(dim, 1)`` initialised as UnivFD: weight N(0, init_std), bias 0."""
    probe = nn.Linear(dim, 1)
    nn.init.normal_(probe.weight, 0.0, init_std)
    nn.init.zeros_(probe.bias)
    return probe


def _train_epoch(
    probe: nn.Linear,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch: int,
) -> None:
    loss_fn = nn.BCEWithLogitsLoss()
    for idx in torch.split(torch.randperm(x.shape[0]), batch):
        opt.zero_grad(set_to_none=True)
        loss_fn(probe(x[idx]).squeeze(1), y[idx]).backward()
        opt.step()


@torch.no_grad()
def _accuracy(probe: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    # sigmoid(logit) > 0.5  <=>  logit > 0
    return float(((probe(x).squeeze(1) > 0).float() == y).float().mean())


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state (the best epoch's weights)."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@torch.no_grad()
def val_auc(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """ROC-AUC of an eval-mode model's logits on validation rows (early stopping)."""
    model.eval()
    return roc_auc(y.numpy().astype(np.int64), model(x).numpy())


def _set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr


def _fit(
    probe: nn.Linear, data: tuple[torch.Tensor, ...], cfg: LinearProbeConfig
) -> LinearProbeSummary:
    x, y, xv, yv = data
    opt = torch.optim.AdamW(
        probe.parameters(), lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
    )
    lrs: list[float] = []
    lr, bad = cfg.lr, 0
    best_acc, best_epoch, best = -1.0, 0, snapshot(probe)
    for epoch in range(cfg.max_epochs):
        lrs.append(lr)
        _train_epoch(probe, opt, x, y, cfg.batch_size)
        acc = _accuracy(probe, xv, yv)
        if acc > best_acc + cfg.min_delta:
            best_acc, best_epoch, bad = acc, epoch, 0
            best = snapshot(probe)
            continue
        bad += 1
        if bad >= cfg.patience:
            lr, bad = lr / cfg.lr_decay, 0
            if lr < cfg.min_lr:
                break
            probe.load_state_dict(best)
            _set_lr(opt, lr)
    probe.load_state_dict(best)
    return LinearProbeSummary(len(lrs), best_epoch, best_acc, tuple(lrs))


def train_linear_probe(
    train_x: FloatArray,
    train_y: LabelArray,
    val_x: FloatArray,
    val_y: LabelArray,
    config: LinearProbeConfig | None = None,
) -> LinearProbeResult:
    """Train the UnivFD linear probe on raw features, seeded.

    Args:
        train_x: (n, d) raw training features.
        train_y: (n,) labels, 1 = fake.
        val_x: (m, d) validation features (early stopping only).
        val_y: (m,) validation labels.
        config: Hyper-parameters; UnivFD defaults when None.

    Returns:
        The best weights (by validation accuracy) and a training summary.

    Raises:
        InvalidInputError: Invalid or mismatched inputs.
    """
    cfg = config or LinearProbeConfig()
    x, y = as_tensors(train_x, train_y)
    xv, yv = as_tensors(val_x, val_y)
    if xv.shape[1] != x.shape[1]:
        raise InvalidInputError(f"val dim {xv.shape[1]} != train dim {x.shape[1]}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        probe = build_probe(x.shape[1], cfg.init_std)
        summary = _fit(probe, (x, y, xv, yv), cfg)
    weight = probe.weight.detach().numpy().reshape(-1).astype(np.float32)
    return LinearProbeResult(weight, float(probe.bias.detach()[0]), summary)
