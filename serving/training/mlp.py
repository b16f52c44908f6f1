"""Domain: the Santosh et al. MLP head and its CVaR-AUC-SAM trainer, in torch.

Architecture as Robust_DM ``DFAD_model_base.py``: 3 x [Linear(d, d) -> BatchNorm1d(d)
-> LeakyReLU(0.01) -> Dropout(0.335)] -> Linear(d, 1), Kaiming-uniform weights
(fan_in, relu), default biases. Our addition: inputs are standardised with the
training mean/std (buffers of the module), so that raw CLIP features, whose
dimensions differ widely in scale, give a well-conditioned problem.
Training as Robust_DM ``train.py``: SAM(AdamW lr 1e-3, wd 0.01, rho 0.05), loss
``gamma CVaR + (1 - gamma) AUC`` (or plain BCE, the "Traditional" baseline),
BatchNorm running statistics frozen in the second SAM pass, cosine LR per epoch;
we keep the epoch with the best validation ROC-AUC.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from serving.errors import InvalidInputError
from serving.scoring.metrics import roc_auc
from serving.scoring.mlp import MlpParams, fold_batchnorm
from serving.training.linear import FloatArray, LabelArray, as_tensors
from serving.training.losses import bce_per_sample, cvar_auc_loss
from serving.training.sam import SAM, disable_running_stats, enable_running_stats

LossName = Literal["cvar_auc", "bce"]
_MIN_STD = 1e-6


class MlpDetector(nn.Module):
    """The MLP head; ``forward`` maps (n, d) raw features to (n,) logits.

    Args:
        dim: Input dimension d (image, or image ‖ text).
        n_hidden: Number of hidden blocks.
        dropout: Dropout probability.
        negative_slope: LeakyReLU slope.
    """

    input_mean: torch.Tensor
    input_std: torch.Tensor

    def __init__(
        self,
        dim: int,
        n_hidden: int = 3,
        dropout: float = 0.335,
        negative_slope: float = 0.01,
    ) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.register_buffer("input_mean", torch.zeros(dim))
        self.register_buffer("input_std", torch.ones(dim))
        blocks: list[nn.Module] = []
        for _ in range(n_hidden):
            blocks += [
                nn.Linear(dim, dim),
                nn.BatchNorm1d(dim),
                nn.LeakyReLU(negative_slope),
                nn.Dropout(dropout),
            ]
        self.hidden = nn.Sequential(*blocks)
        self.output_layer = nn.Linear(dim, 1)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.kaiming_uniform_(
                    module.weight, mode="fan_in", nonlinearity="relu"
                )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n,) of raw features (n, d)."""
        h = self.hidden((x - self.input_mean) / self.input_std)
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
class MlpTrainConfig:
    """Hyper-parameters of the MLP trainer (Robust_DM defaults, batch 256)."""

    epochs: int = 32
    batch_size: int = 256
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    rho: float = 0.05
    loss: LossName = "cvar_auc"
    gamma: float = 0.1
    alpha: float = 0.8
    eta: float = 0.6
    p: float = 2.0
    eta_min: float = 1e-5
    n_hidden: int = 3
    dropout: float = 0.335
    negative_slope: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("cvar_auc", "bce"):
            raise InvalidInputError(
                f"loss must be 'cvar_auc' or 'bce', got {self.loss!r}"
            )
        if self.epochs < 1 or self.batch_size < 2:
            raise InvalidInputError("need epochs >= 1 and batch_size >= 2")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)


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


@torch.no_grad()
def _val_auc(model: MlpDetector, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    return roc_auc(y.numpy().astype(np.int64), model(x).numpy())


def _snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _fit(
    model: MlpDetector, data: tuple[torch.Tensor, ...], cfg: MlpTrainConfig
) -> MlpTrainingSummary:
    x, y, xv, yv = data
    sam = SAM(
        model.parameters(), torch.optim.AdamW, rho=cfg.rho,
        lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
    )  # fmt: skip
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        sam.base_optimizer, T_max=cfg.epochs, eta_min=cfg.eta_min
    )
    history: list[float] = []
    best_auc, best_epoch, best = -math.inf, 0, _snapshot(model)
    for epoch in range(cfg.epochs):
        _sam_epoch(model, sam, x, y, cfg)
        scheduler.step()
        history.append(_val_auc(model, xv, yv))
        if history[-1] > best_auc:
            best_auc, best_epoch, best = history[-1], epoch, _snapshot(model)
    model.load_state_dict(best)
    model.eval()
    return MlpTrainingSummary(len(history), best_epoch, best_auc, tuple(history))


def train_mlp(
    train_x: FloatArray,
    train_y: LabelArray,
    val_x: FloatArray,
    val_y: LabelArray,
    config: MlpTrainConfig | None = None,
) -> MlpTrainingResult:
    """Train the MLP head on raw features, seeded.

    Args:
        train_x: (n, d) raw training features (image, or image ‖ text).
        train_y: (n,) labels, 1 = fake.
        val_x: (m, d) validation features (model selection only).
        val_y: (m,) validation labels; both classes needed.
        config: Hyper-parameters; Robust_DM defaults when None.

    Returns:
        The model of the epoch with the best validation ROC-AUC, and a summary.

    Raises:
        InvalidInputError: Invalid inputs, or a class missing from validation.
    """
    cfg = config or MlpTrainConfig()
    x, y = as_tensors(train_x, train_y)
    xv, yv = as_tensors(val_x, val_y)
    if xv.shape[1] != x.shape[1] or yv.min() == yv.max():
        raise InvalidInputError("val must match train's dim and contain both classes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = MlpDetector(x.shape[1], cfg.n_hidden, cfg.dropout, cfg.negative_slope)
        model.input_mean.copy_(x.mean(dim=0))
        model.input_std.copy_(x.std(dim=0).clamp_min(_MIN_STD))
        summary = _fit(model, (x, y, xv, yv), cfg)
    return MlpTrainingResult(model, summary)
