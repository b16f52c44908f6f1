import itertools

import numpy as np
import numpy.typing as npt
import pytest
import torch

from serving.errors import InvalidInputError
from serving.training.losses import (
    auc_loss,
    bce_per_sample,
    cvar_auc_loss,
    cvar_loss,
)


def _cvar_objective(losses: npt.NDArray[np.float64], lam: float, alpha: float) -> float:
    return float(lam + np.maximum(losses - lam, 0.0).sum() / (alpha * losses.size))


def test_cvar_loss_equals_mean_of_worst_fraction() -> None:
    losses = torch.arange(1.0, 11.0, dtype=torch.float64)
    # alpha n = 8: mean of the 8 largest losses (3..10) = 52 / 8
    assert cvar_loss(losses, alpha=0.8).item() == pytest.approx(6.5)
    assert cvar_loss(torch.tensor([4.0, 0.0, 2.0, 2.0]), alpha=0.5).item() == 3.0


def test_cvar_loss_alpha_one_is_the_mean() -> None:
    losses = torch.tensor([0.3, 1.2, 0.1, 5.0])
    assert cvar_loss(losses, alpha=1.0).item() == pytest.approx(losses.mean().item())


@pytest.mark.parametrize(("n", "alpha"), [(7, 0.8), (10, 0.8), (5, 0.3), (9, 0.55)])
def test_cvar_loss_matches_brute_force_lambda_grid(n: int, alpha: float) -> None:
    losses = np.random.default_rng(n).exponential(size=n)
    # the objective is piecewise linear: its minimum is at a loss or on the grid
    grid = np.concatenate([losses, np.linspace(losses.min() - 1, losses.max(), 2001)])
    brute = min(_cvar_objective(losses, lam, alpha) for lam in grid)
    exact = cvar_loss(torch.from_numpy(losses), alpha=alpha).item()
    assert exact == pytest.approx(brute, abs=1e-12)


def test_cvar_loss_gradient_skips_lambda() -> None:
    losses = torch.arange(1.0, 11.0, requires_grad=True)
    torch.autograd.backward(cvar_loss(losses, alpha=0.8))
    assert losses.grad is not None
    # lambda* = 3 is detached: only the 7 losses above it get 1 / (alpha n)
    expected = torch.tensor([0.0] * 3 + [1.0 / 8.0] * 7)
    torch.testing.assert_close(losses.grad, expected)


@pytest.mark.parametrize("alpha", [0.0, -0.1, 1.5])
def test_cvar_loss_rejects_alpha_out_of_range(alpha: float) -> None:
    with pytest.raises(InvalidInputError):
        cvar_loss(torch.ones(4), alpha=alpha)


def test_auc_loss_matches_hand_computed_pairs() -> None:
    scores = torch.tensor([0.9, 0.1, 0.2, 0.5], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 0])
    # pairs (0.9,0.1) (0.9,0.5) (0.2,0.1) (0.2,0.5): 0 + 0.2^2 + 0.5^2 + 0.9^2 = 1.10
    assert auc_loss(scores, labels, eta=0.6, p=2).item() == pytest.approx(1.10 / 4)


def test_auc_loss_matches_loop_over_all_pairs() -> None:
    rng = np.random.default_rng(0)
    s, y = rng.normal(size=9), np.array([1, 0, 0, 1, 1, 0, 0, 0, 1])
    pos, neg = s[y == 1], s[y == 0]
    loop = [max(0.0, 0.6 - (a - b)) ** 3 for a, b in itertools.product(pos, neg)]
    got = auc_loss(torch.from_numpy(s), torch.from_numpy(y), eta=0.6, p=3).item()
    assert got == pytest.approx(sum(loop) / len(loop))


def test_auc_loss_is_zero_with_gradient_when_class_absent() -> None:
    scores = torch.tensor([0.3, -1.0, 2.0], requires_grad=True)
    loss = auc_loss(scores, torch.ones(3))
    torch.autograd.backward(loss)
    assert loss.item() == 0.0
    assert scores.grad is not None
    assert torch.equal(scores.grad, torch.zeros(3))


@pytest.mark.parametrize("gamma", [0.0, 0.1, 0.5, 1.0])
def test_cvar_auc_loss_mixes_terms_with_gamma(gamma: float) -> None:
    logits = torch.tensor([2.0, -0.5, 0.3, -1.5, 0.8], dtype=torch.float64)
    labels = torch.tensor([1, 0, 1, 0, 0])
    cvar = cvar_loss(bce_per_sample(logits, labels), alpha=0.8)
    auc = auc_loss(logits, labels, eta=0.6, p=2)
    got = cvar_auc_loss(logits, labels, gamma=gamma)
    assert got.item() == pytest.approx(gamma * cvar.item() + (1 - gamma) * auc.item())


def test_cvar_auc_loss_rejects_gamma_out_of_range() -> None:
    with pytest.raises(InvalidInputError):
        cvar_auc_loss(torch.zeros(2), torch.tensor([0, 1]), gamma=1.5)
