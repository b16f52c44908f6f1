import copy

import torch
from torch import nn

from serving.training.sam import SAM, disable_running_stats, enable_running_stats

RHO = 0.05
LR, BETAS, WD = 1e-2, (0.9, 0.999), 0.01


def _setup() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.Tanh(), nn.Linear(3, 1))
    return model, torch.randn(8, 4), torch.randn(8, 1)


def _sam(model: nn.Module) -> SAM:
    return SAM(
        model.parameters(),
        torch.optim.AdamW,
        rho=RHO,
        lr=LR,
        betas=BETAS,
        weight_decay=WD,
    )


def _backward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    out: torch.Tensor = model(x)
    torch.autograd.backward(((out - y) ** 2).mean())


def test_sam_first_step_moves_along_normalised_gradient() -> None:
    model, x, y = _setup()
    sam = _sam(model)
    w0 = [p.detach().clone() for p in model.parameters()]
    _backward(model, x, y)
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    norm = torch.linalg.vector_norm(torch.cat([g.reshape(-1) for g in grads]))
    sam.first_step()
    for p, w, g in zip(model.parameters(), w0, grads, strict=True):
        torch.testing.assert_close(p.detach(), w + RHO * g / norm)


def test_sam_second_step_is_base_step_from_w_with_perturbed_gradient() -> None:
    model, x, y = _setup()
    reference = copy.deepcopy(model)
    sam = _sam(model)
    _backward(model, x, y)
    sam.first_step(zero_grad=True)
    _backward(model, x, y)
    perturbed_grads = [
        p.grad.detach().clone() for p in model.parameters() if p.grad is not None
    ]
    sam.second_step(zero_grad=True)
    manual = torch.optim.AdamW(
        reference.parameters(), lr=LR, betas=BETAS, weight_decay=WD
    )
    for p, g in zip(reference.parameters(), perturbed_grads, strict=True):
        p.grad = g
    manual.step()
    for got, want in zip(model.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(got.detach(), want.detach(), rtol=0, atol=0)
    assert all(p.grad is None for p in model.parameters())


def test_disable_running_stats_freezes_batchnorm() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4)
    model = nn.Sequential(nn.Linear(4, 4), bn).train()
    model(torch.randn(16, 4) + 3.0)
    assert bn.running_mean is not None
    assert bn.running_var is not None
    mean, var = bn.running_mean.clone(), bn.running_var.clone()
    disable_running_stats(model)
    model(torch.randn(16, 4) - 5.0)
    assert torch.equal(bn.running_mean, mean)
    assert torch.equal(bn.running_var, var)
    enable_running_stats(model)
    assert bn.momentum == 0.1
    model(torch.randn(16, 4) - 5.0)
    assert not torch.equal(bn.running_mean, mean)
