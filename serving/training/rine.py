"""Domain: the RINE head (Koutlis & Papadopoulos, ECCV 2024) and its trainer, in torch.

Architecture as mever-team/rine ``src/models.py`` on cached CLS tokens (the backbone
is frozen, so the tokens are features): Dropout -> shared per-block projection
``n_proj x [Linear(D, q) | Linear(q, q), ReLU, Dropout]`` -> Trainable Importance
Estimator (``alpha`` of shape [1, L, q], softmax over the blocks, weighted sum) ->
Dropout -> ``n_proj x [Linear(q, q), ReLU, Dropout]`` (the embedding ``z``) ->
``n_head x [Linear(q, q), ReLU, Dropout]`` -> ``Linear(q, 1)``.
Training as its ``train_one_experiment``: Adam lr 1e-3, batch 128, loss
BCE-with-logits (summed over the batch, as RINE) + xi * SupCon (temperature 0.07)
on the L2-normalised ``z``. RINE keeps the model after one epoch of ~720k images;
on a few thousand images we train up to ``max_epochs`` and keep the epoch with the
best validation ROC-AUC, stopping after ``patience`` epochs without a gain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from serving.errors import InvalidInputError
from serving.heads.rine import RineTrainConfig as RineTrainConfig
from serving.scoring.rine import RineParams
from serving.training.linear import (
    FloatArray,
    LabelArray,
    as_tensors,
    snapshot,
    val_auc,
)


def _block(d_in: int, d_out: int, dropout: float) -> list[nn.Module]:
    return [nn.Linear(d_in, d_out), nn.ReLU(), nn.Dropout(dropout)]


class RineNet(nn.Module):
    """The trainable part of RINE on cached tokens.

    ``forward`` maps (n, L * D) view rows (blocks concatenated) to (n,) logits;
    `forward_with_embedding` also returns the (n, q) embedding ``z`` for SupCon.

    Args:
        n_blocks: Number of blocks L.
        block_dim: Token width D.
        proj_dim: Projection width q.
        n_proj: Layers per projection.
        n_head: Hidden layers of the classifier.
        dropout: Dropout probability.
    """

    def __init__(
        self,
        n_blocks: int,
        block_dim: int,
        proj_dim: int = 128,
        n_proj: int = 2,
        n_head: int = 2,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.n_blocks, self.block_dim = n_blocks, block_dim
        self.alpha = nn.Parameter(torch.randn(1, n_blocks, proj_dim))
        proj1: list[nn.Module] = [nn.Dropout(dropout)]
        proj2: list[nn.Module] = [nn.Dropout(dropout)]
        for i in range(n_proj):
            proj1 += _block(block_dim if i == 0 else proj_dim, proj_dim, dropout)
            proj2 += _block(proj_dim, proj_dim, dropout)
        head: list[nn.Module] = []
        for _ in range(n_head):
            head += _block(proj_dim, proj_dim, dropout)
        self.proj1 = nn.Sequential(*proj1)
        self.proj2 = nn.Sequential(*proj2)
        self.head = nn.Sequential(*head, nn.Linear(proj_dim, 1))

    def forward_with_embedding(
        self, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits (n,), z (n, q))`` of (n, L * D) rows."""
        g = self.proj1(x.reshape(x.shape[0], self.n_blocks, self.block_dim))
        z = self.proj2((torch.softmax(self.alpha, dim=1) * g).sum(dim=1))
        logits: torch.Tensor = self.head(z).squeeze(1)
        return logits, z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (n,) of (n, L * D) rows."""
        return self.forward_with_embedding(x)[0]


def supcon_loss(
    z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.07
) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020), one view per sample.

    As RINE's ``SupConLoss`` (contrast mode "all", base temperature = temperature):
    each sample is an anchor, the other samples of its class are its positives, all
    other samples the contrast set. Anchors without a positive are skipped.

    Args:
        z: (n, q) embeddings; L2-normalised here.
        labels: (n,) class labels.
        temperature: Softmax temperature.

    Returns:
        The scalar loss; 0 (with a zero gradient) when no anchor has a positive.
    """
    f = functional.normalize(z, dim=1)
    sim = f @ f.T / temperature
    sim = sim - sim.max(dim=1, keepdim=True).values.detach()
    n = z.shape[0]
    not_self = ~torch.eye(n, dtype=torch.bool, device=z.device)
    positive = (labels[:, None] == labels[None, :]) & not_self
    log_denominator = torch.logsumexp(sim.masked_fill(~not_self, -math.inf), dim=1)
    log_prob = sim - log_denominator[:, None]
    n_pos = positive.sum(dim=1)
    has_pos = n_pos > 0
    if not bool(has_pos.any()):
        return z.sum() * 0.0
    mean_log_prob = (log_prob * positive).sum(dim=1)[has_pos] / n_pos[has_pos]
    return -mean_log_prob.mean()


def rine_loss(
    net: RineNet, x: torch.Tensor, y: torch.Tensor, cfg: RineTrainConfig
) -> torch.Tensor:
    """BCE-with-logits (RINE: summed) + xi * SupCon on the normalised embedding."""
    logits, z = net.forward_with_embedding(x)
    loss = functional.binary_cross_entropy_with_logits(
        logits, y, reduction=cfg.bce_reduction
    )
    if cfg.xi > 0.0:
        loss = loss + cfg.xi * supcon_loss(z, y, cfg.temperature)
    return loss


def _np(t: torch.Tensor) -> FloatArray:
    out: FloatArray = t.detach().cpu().numpy().astype(np.float32)
    return out


def _linears(seq: nn.Sequential) -> list[nn.Linear]:
    return [m for m in seq if isinstance(m, nn.Linear)]


def to_rine_params(net: RineNet) -> RineParams:
    """The eval-mode weights of `net` as numpy `RineParams` for `rine_logit`."""
    head = _linears(net.head)
    out = head.pop()
    return RineParams(
        n_blocks=net.n_blocks,
        block_dim=net.block_dim,
        proj1=tuple((_np(m.weight), _np(m.bias)) for m in _linears(net.proj1)),
        alpha=_np(net.alpha)[0],
        proj2=tuple((_np(m.weight), _np(m.bias)) for m in _linears(net.proj2)),
        head=tuple((_np(m.weight), _np(m.bias)) for m in head),
        out_weight=_np(out.weight).reshape(-1),
        out_bias=float(out.bias.detach()[0]),
    )


@dataclass(frozen=True)
class RineTrainingSummary:
    """What happened during training.

    Attributes:
        epochs_run: Epochs trained.
        best_epoch: 0-based epoch of the kept weights.
        best_val_auc: Validation ROC-AUC of the kept weights (NaN without selection).
        val_auc_history: Validation ROC-AUC after each epoch (empty without selection).
    """

    epochs_run: int
    best_epoch: int
    best_val_auc: float
    val_auc_history: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "val_auc_history": list(self.val_auc_history)}


@dataclass(frozen=True, eq=False)
class RineTrainingResult:
    """The trained network (eval mode, kept epoch) and the training summary."""

    net: RineNet
    summary: RineTrainingSummary


def _epoch(
    net: RineNet,
    opt: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: RineTrainConfig,
) -> None:
    net.train()
    for idx in torch.split(torch.randperm(x.shape[0]), cfg.batch_size):
        opt.zero_grad(set_to_none=True)
        torch.autograd.backward(rine_loss(net, x[idx], y[idx], cfg))
        opt.step()


def _fit(
    net: RineNet,
    data: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None],
    cfg: RineTrainConfig,
    epochs: int | None,
) -> RineTrainingSummary:
    x, y, xv, yv = data
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if xv is None or yv is None or epochs is not None:
        n_epochs = epochs or cfg.max_epochs
        for _ in range(n_epochs):
            _epoch(net, opt, x, y, cfg)
        net.eval()
        return RineTrainingSummary(n_epochs, n_epochs - 1, math.nan, ())
    history: list[float] = []
    best_auc, best_epoch, best = -math.inf, 0, snapshot(net)
    for epoch in range(cfg.max_epochs):
        _epoch(net, opt, x, y, cfg)
        history.append(val_auc(net, xv, yv))
        if history[-1] > best_auc:
            best_auc, best_epoch, best = history[-1], epoch, snapshot(net)
        elif epoch - best_epoch >= cfg.patience:
            break
    net.load_state_dict(best)
    net.eval()
    return RineTrainingSummary(len(history), best_epoch, best_auc, tuple(history))


def train_rine(
    train_x: FloatArray,
    train_y: LabelArray,
    n_blocks: int,
    val_x: FloatArray | None = None,
    val_y: LabelArray | None = None,
    config: RineTrainConfig | None = None,
    epochs: int | None = None,
) -> RineTrainingResult:
    """Train the RINE head on (n, L * D) view rows, seeded.

    Args:
        train_x: (n, L * D) block tokens (the head's view of the flat features).
        train_y: (n,) labels, 1 = fake.
        n_blocks: Number of blocks L in a row.
        val_x: (m, L * D) rows for early stopping (model selection only).
        val_y: (m,) their labels; both classes needed.
        config: Hyper-parameters; defaults when None.
        epochs: Train exactly this many epochs, without validation (refit).

    Returns:
        The network of the kept epoch (eval mode) and a summary.

    Raises:
        InvalidInputError: Invalid inputs, or a class missing from validation.
    """
    cfg = config or RineTrainConfig()
    x, y = as_tensors(train_x, train_y)
    if n_blocks < 1 or x.shape[1] % n_blocks:
        raise InvalidInputError(f"width {x.shape[1]} is not {n_blocks} blocks")
    xv = yv = None
    if val_x is not None and val_y is not None and epochs is None:
        xv, yv = as_tensors(val_x, val_y)
        if xv.shape[1] != x.shape[1] or yv.min() == yv.max():
            raise InvalidInputError(
                "val must match train's width and hold both classes"
            )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = RineNet(
            n_blocks, x.shape[1] // n_blocks, cfg.proj_dim, cfg.n_proj,
            cfg.n_head, cfg.dropout,
        )  # fmt: skip
        summary = _fit(net, (x, y, xv, yv), cfg, epochs)
    return RineTrainingResult(net, summary)
