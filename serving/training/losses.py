"""Domain: training losses of Santosh et al. (CVaR, pairwise AUC surrogate) in torch.

Labels: 1 = fake, 0 = real. Scores are logits (higher = more likely fake).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional

from serving.errors import InvalidInputError

# ceil(alpha * n) with slack so that 0.7 * 10 (= 7.000000000000001) counts as 7.
_CEIL_EPS = 1e-9


def bce_per_sample(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-sample binary cross-entropy with logits.

    Args:
        logits: (n,) logits.
        labels: (n,) labels in {0, 1}, any dtype.

    Returns:
        (n,) losses.
    """
    return functional.binary_cross_entropy_with_logits(
        logits, labels.to(logits.dtype), reduction="none"
    )


def cvar_loss(per_sample_losses: torch.Tensor, alpha: float = 0.8) -> torch.Tensor:
    """Conditional value-at-risk of the losses, computed exactly.

    ``CVaR_alpha = min_lambda lambda + 1/(alpha n) sum_i [l_i - lambda]_+``. The
    objective is convex and piecewise linear; it is minimised at
    ``lambda* = l_(m)``, the m-th largest loss with ``m = ceil(alpha n)`` (the
    VaR). When ``alpha n`` is an integer the value is the mean of the worst
    ``alpha n`` losses. No gradient flows through lambda (as in Robust_DM, which
    searches lambda with ``fminbound`` on detached losses).

    Args:
        per_sample_losses: (n,) losses, n >= 1.
        alpha: Fraction of worst losses, in (0, 1].

    Returns:
        The scalar loss.

    Raises:
        InvalidInputError: `alpha` out of range or losses not a non-empty 1-D tensor.
    """
    if not 0.0 < alpha <= 1.0:
        raise InvalidInputError(f"alpha must be in (0, 1], got {alpha}")
    if per_sample_losses.ndim != 1 or per_sample_losses.numel() == 0:
        raise InvalidInputError("need a non-empty (n,) tensor of losses")
    n = per_sample_losses.numel()
    m = min(n, max(1, math.ceil(alpha * n - _CEIL_EPS)))
    lam = torch.topk(per_sample_losses.detach(), m).values[-1]
    return lam + functional.relu(per_sample_losses - lam).sum() / (alpha * n)


def auc_loss(
    scores: torch.Tensor, labels: torch.Tensor, eta: float = 0.6, p: float = 2.0
) -> torch.Tensor:
    """Pairwise AUC surrogate over all in-batch (fake, real) pairs.

    ``1/(n+ n-) sum_{i: y=1} sum_{j: y=0} max(0, eta - (s_i - s_j))^p``.

    Args:
        scores: (n,) scores (logits).
        labels: (n,) labels in {0, 1}.
        eta: Margin, in (0, 1].
        p: Power, > 1.

    Returns:
        The scalar loss; 0 (with a zero gradient) when a class is absent.
    """
    positive = labels > 0.5
    pos, neg = scores[positive], scores[~positive]
    if pos.numel() == 0 or neg.numel() == 0:
        return scores.sum() * 0.0
    margins = eta - (pos[:, None] - neg[None, :])
    return (functional.relu(margins) ** p).mean()


def cvar_auc_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    gamma: float = 0.1,
    alpha: float = 0.8,
    eta: float = 0.6,
    p: float = 2.0,
) -> torch.Tensor:
    """``gamma * CVaR(BCE) + (1 - gamma) * AUC`` (v2 paper and Robust_DM code).

    Args:
        logits: (n,) logits.
        labels: (n,) labels in {0, 1}.
        gamma: Weight of the CVaR term, in [0, 1].
        alpha: CVaR fraction, in (0, 1].
        eta: AUC margin.
        p: AUC power.

    Returns:
        The scalar loss.

    Raises:
        InvalidInputError: `gamma` or `alpha` out of range.
    """
    if not 0.0 <= gamma <= 1.0:
        raise InvalidInputError(f"gamma must be in [0, 1], got {gamma}")
    cvar = cvar_loss(bce_per_sample(logits, labels), alpha)
    return gamma * cvar + (1.0 - gamma) * auc_loss(logits, labels, eta, p)
