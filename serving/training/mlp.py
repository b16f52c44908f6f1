"""Domain: the Santosh et al. MLP head and its CVaR-AUC-SAM trainer, in torch.

Architecture after Robust_DM ``DFAD_model_base.py``: n x [Linear -> BatchNorm1d ->
LeakyReLU(0.01) -> Dropout(0.335)] -> Linear(h, 1), Kaiming-uniform weights
(fan_in, relu), default biases. Robust_DM keeps the width d in every block
(3 x Linear(d, d)); on the layer stack (d = 12 x 768 = 9216) that is 255M parameters
for a few thousand images, so the first Linear maps d -> h (``hidden_dim``, 256 by
default) and the others h -> h; ``hidden_dim=None`` restores Robust_DM's d -> d.
Our additions: inputs are standardised with the training mean/std (buffers of the
module), so that features whose dimensions differ widely in scale give a
well-conditioned problem; optional input dropout; early stopping (``patience``).
Training as Robust_DM ``train.py``: SAM(AdamW lr 1e-3, wd 0.01, rho 0.05), loss
``gamma CVaR + (1 - gamma) AUC`` (or plain BCE, the "Traditional" baseline),
BatchNorm running statistics frozen in the second SAM pass, cosine LR per epoch;
we keep the epoch with the best validation ROC-AUC.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from serving.errors import InvalidInputError
from serving.heads.mlp import LossName as LossName
from serving.heads.mlp import MlpTrainConfig as MlpTrainConfig
from serving.scoring.mlp import MlpParams, fold_batchnorm
from serving.training.linear import (
    FloatArray,
    LabelArray,
    as_tensors,
    snapshot,
    val_auc,
)
from serving.training.losses import bce_per_sample, cvar_auc_loss
from serving.training.sam import SAM, disable_running_stats, enable_running_stats

_MIN_STD = 1e-6


class MlpDetector(nn.Module):
    """The MLP head; ``forward`` maps (n, d) raw features to (n,) logits.

    Args:
        dim: Input dimension d (the head's view of the features).
        n_hidden: Number of hidden blocks.
        dropout: Dropout probability.
        negative_slope: LeakyReLU slope.
        hidden_dim: Width h of the hidden blocks; None keeps d (Robust_DM).
        input_dropout: Dropout probability on the standardised input.
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(
        self,
        dim: int,
        n_hidden: int = 3,
        dropout: float = 0.335,
        negative_slope: float = 0.01,
        hidden_dim: int | None = None,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.register_buffer("input_mean", torch.zeros(dim))
        self.register_buffer("input_std", torch.ones(dim))
        self.input_dropout = nn.Dropout(input_dropout)
        width = hidden_dim or dim
        blocks: list[nn.Module] = []
        for i in range(n_hidden):
            blocks += [
                nn.Linear(dim if i == 0 else width, width),
                nn.BatchNorm1d(width),
                nn.LeakyReLU(negative_slope),
                nn.Dropout(dropout),
            ]
        self.hidden = nn.Sequential(*blocks)
        self.output_layer = nn.Linear(width if n_hidden else dim, 1)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(
                    module.weight, mode="fan_in", nonlinearity="relu"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n,) of raw features (n, d)."""
        h = self.hidden(self.input_dropout((x - self.input_mean) / self.input_std))
        out: torch.Tensor = self.output_layer(h).squeeze(1)
        return out


def _np(t: torch.Tensor | None) -> FloatArray:
    if t is None:
        raise InvalidInputError("BatchNorm without running statistics cannot be folded")
    out: FloatArray = t.detach().cpu().numpy().astype(np.float32)
    return out


def to_mlp_params(model: MlpDetector) -> MlpParams:
    """Fold the eval-mode model into numpy `MlpParams` for `mlp_logit`.

    Args:
        model: A (trained) `MlpDetector`.

    Returns:
        The folded parameters, with the input standardisation.
    """
    layers = list(model.hidden)
    weights, biases = [], []
    for linear, bn in zip(layers[0::4], layers[1::4], strict=True):
        if not isinstance(linear, nn.Linear) or not isinstance(bn, nn.BatchNorm1d):
            raise InvalidInputError("unexpected MLP block layout")
        w, b = fold_batchnorm(
            _np(linear.weight), _np(linear.bias), _np(bn.weight), _np(bn.bias),
            _np(bn.running_mean), _np(bn.running_var), bn.eps,
        )  # fmt: skip
        weights.append(w)
        biases.append(b)
    return MlpParams(
        input_mean=_np(model.input_mean),
        input_std=_np(model.input_std),
        hidden_weights=tuple(weights),
        hidden_biases=tuple(biases),
        out_weight=_np(model.output_layer.weight).reshape(-1),
        out_bias=float(model.output_layer.bias.detach()[0]),
        negative_slope=model.negative_slope,
    )


@dataclass(frozen=True)
class MlpTrainingSummary:
    """What happened during training.

    Attributes:
        epochs_run: Epochs trained.
        best_epoch: 0-based epoch of the kept weights.
        best_val_auc: Validation ROC-AUC of the kept weights.
        val_auc_history: Validation ROC-AUC after each epoch.
    """

    epochs_run: int
    best_epoch: int
    best_val_auc: float
    val_auc_history: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "val_auc_history": list(self.val_auc_history)}


@dataclass(frozen=True, eq=False)
class MlpTrainingResult:
    """The trained model (eval mode, best epoch) and the training summary."""

    model: MlpDetector
    summary: MlpTrainingSummary


def _loss(cfg: MlpTrainConfig, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if cfg.loss == "bce":
        return bce_per_sample(logits, y).mean()
    return cvar_auc_loss(logits, y, cfg.gamma, cfg.alpha, cfg.eta, cfg.p)


def _sam_epoch(
    model: MlpDetector, sam: SAM, x: torch.Tensor, y: torch.Tensor, cfg: MlpTrainConfig
) -> None:
    model.train()
    for idx in torch.split(torch.randperm(x.shape[0]), cfg.batch_size):
        if idx.numel() < 2:
            continue  # BatchNorm cannot train on a single sample
        xb, yb = x[idx], y[idx]
        enable_running_stats(model)
        torch.autograd.backward(_loss(cfg, model(xb), yb))
        sam.first_step(zero_grad=True)
        disable_running_stats(model)
        torch.autograd.backward(_loss(cfg, model(xb), yb))
        sam.second_step(zero_grad=True)
    enable_running_stats(model)


def _fit(
    model: MlpDetector,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    cfg: MlpTrainConfig,
    epochs: int | None,
) -> MlpTrainingSummary:
    x, y, xv, yv = data
    sam = SAM(
        model.parameters(), torch.optim.AdamW, rho=cfg.rho,
        lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
    )  # fmt: skip
    # T_max stays cfg.epochs in a refit, so its first epochs see the same LRs.
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        sam.base_optimizer, T_max=cfg.epochs, eta_min=cfg.eta_min
    )
    if xv is None or yv is None or epochs is not None:
        n_epochs = min(epochs or cfg.epochs, cfg.epochs)
        for _ in range(n_epochs):
            _sam_epoch(model, sam, x, y, cfg)
            scheduler.step()
        model.eval()
        return MlpTrainingSummary(n_epochs, n_epochs - 1, math.nan, ())
    history: list[float] = []
    best_auc, best_epoch, best = -math.inf, 0, snapshot(model)
    for epoch in range(cfg.epochs):
        _sam_epoch(model, sam, x, y, cfg)
        scheduler.step()
        history.append(val_auc(model, xv, yv))
        if history[-1] > best_auc:
            best_auc, best_epoch, best = history[-1], epoch, snapshot(model)
        elif cfg.patience is not None and epoch - best_epoch >= cfg.patience:
            break
    model.load_state_dict(best)
    model.eval()
    return MlpTrainingSummary(len(history), best_epoch, best_auc, tuple(history))


def build_mlp(dim: int, cfg: MlpTrainConfig) -> MlpDetector:
    """An untrained `MlpDetector` of input width `dim` as `cfg` describes it."""
    return MlpDetector(
        dim, cfg.n_hidden, cfg.dropout, cfg.negative_slope,
        cfg.hidden_dim, cfg.input_dropout,
    )  # fmt: skip


def train_mlp(
    train_x: FloatArray,
    train_y: LabelArray,
    val_x: FloatArray | None = None,
    val_y: LabelArray | None = None,
    config: MlpTrainConfig | None = None,
    epochs: int | None = None,
) -> MlpTrainingResult:
    """Train the MLP head on (n, d) head inputs, seeded.

    Args:
        train_x: (n, d) training inputs (the head's view of the features).
        train_y: (n,) labels, 1 = fake.
        val_x: (m, d) validation inputs (model selection only).
        val_y: (m,) validation labels; both classes needed.
        config: Hyper-parameters; Robust_DM defaults when None.
        epochs: Train exactly this many epochs (at most ``config.epochs``) without
            validation, e.g. to refit on all rows after early stopping elsewhere.

    Returns:
        The model of the epoch with the best validation ROC-AUC (or of the last
        epoch without validation), and a summary.

    Raises:
        InvalidInputError: Invalid inputs, or a class missing from validation.
    """
    cfg = config or MlpTrainConfig()
    x, y = as_tensors(train_x, train_y)
    xv = yv = None
    if epochs is None:
        if val_x is None or val_y is None:
            raise InvalidInputError("give validation rows or a number of epochs")
        xv, yv = as_tensors(val_x, val_y)
        if xv.shape[1] != x.shape[1] or yv.min() == yv.max():
            raise InvalidInputError(
                "val must match train's dim and contain both classes"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = build_mlp(x.shape[1], cfg)
        model.input_mean.copy_(x.mean(dim=0))
        model.input_std.copy_(x.std(dim=0).clamp_min(_MIN_STD))
        summary = _fit(model, (x, y, xv, yv), cfg, epochs)
    return MlpTrainingResult(model, summary)
