"""Domain: Sharpness-Aware Minimisation (Foret et al. 2021) around a base optimiser.

Written for Robust_DM, whose ``SAM_utils`` helpers are missing from the repository;
the API follows davda54/sam (non-adaptive, global gradient norm). Per batch:
forward/backward -> `SAM.first_step` -> forward/backward with BatchNorm running
statistics frozen (`disable_running_stats`) -> `SAM.second_step`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from serving.errors import InvalidInputError

_BACKUP_ATTR = "_sam_backup_momentum"
_NORM_EPS = 1e-12


class SAM:
    """SAM wrapper: perturb to ``w + rho g / ||g||``, then step the base optimiser.

    Args:
        params: Parameters to optimise.
        base_optimizer_cls: Base optimiser factory, e.g. ``torch.optim.AdamW``.
        rho: Neighbourhood radius (> 0).
        **base_kwargs: Passed to the base optimiser (lr, betas, weight_decay, ...).

    Attributes:
        base_optimizer: The wrapped optimiser; give it to LR schedulers.
    """

    def __init__(
        self,
        params: Iterable[nn.Parameter],
        base_optimizer_cls: Callable[..., torch.optim.Optimizer],
        rho: float = 0.05,
        **base_kwargs: Any,
    ) -> None:
        if rho <= 0.0:
            raise InvalidInputError(f"rho must be > 0, got {rho}")
        self.rho = rho
        self.base_optimizer = base_optimizer_cls(params, **base_kwargs)
        self._saved: dict[nn.Parameter, torch.Tensor] = {}

    def _params_with_grad(self) -> list[tuple[nn.Parameter, torch.Tensor]]:
        return [
            (p, p.grad)
            for group in self.base_optimizer.param_groups
            for p in group["params"]
            if p.grad is not None
        ]

    @torch.no_grad()
    def first_step(self, zero_grad: bool = False) -> None:
        """Move to the sharpest nearby point, ``w <- w + rho g / ||g||``.

        The norm is over all parameters together. The original weights are kept
        (exact copy, not ``w + e_w - e_w``) for `second_step`.

        Args:
            zero_grad: Clear gradients afterwards.
        """
        pairs = self._params_with_grad()
        if not pairs:
            return
        grad_norm = torch.linalg.vector_norm(
            torch.stack([torch.linalg.vector_norm(g) for _, g in pairs])
        )
        scale = self.rho / (grad_norm + _NORM_EPS)
        self._saved = {}
        for p, g in pairs:
            self._saved[p] = p.detach().clone()
            p.add_(g * scale.to(p.dtype))
        if zero_grad:
            self.zero_grad()

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Restore the original weights and step with the perturbed-point gradient.

        Args:
            zero_grad: Clear gradients afterwards.
        """
        for p, original in self._saved.items():
            p.copy_(original)
        self._saved = {}
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def zero_grad(self) -> None:
        """Clear all gradients (set to None)."""
        self.base_optimizer.zero_grad(set_to_none=True)


def disable_running_stats(model: nn.Module) -> None:
    """Freeze BatchNorm running statistics (momentum 0) until `enable_running_stats`.

    As davda54/sam's ``bypass_bn``: the second SAM forward pass must not update the
    running mean/var (``num_batches_tracked`` still counts).

    Args:
        model: Any module; its BatchNorm layers are affected.
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm) and not hasattr(module, _BACKUP_ATTR):
            setattr(module, _BACKUP_ATTR, module.momentum)
            module.momentum = 0.0


def enable_running_stats(model: nn.Module) -> None:
    """Restore the BatchNorm momenta saved by `disable_running_stats`.

    Args:
        model: The module given to `disable_running_stats`.
    """
    for module in model.modules():
        if isinstance(module, _BatchNorm) and hasattr(module, _BACKUP_ATTR):
            module.momentum = getattr(module, _BACKUP_ATTR)
            delattr(module, _BACKUP_ATTR)
