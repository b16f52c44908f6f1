"""Domain: the seeded CPU training loop and tensor helpers of the generators trained here.

Every generator trained by the benchmark builder (the diffusion denoiser, the VAE,
the sub-pixel super-resolution network) runs the same loop: Adam with a one-cycle
schedule, a fixed number of steps, batches drawn by a seeded generator, under a
forked torch RNG so that a build never depends on what ran before. Weights are saved
as safetensors with their metadata in one JSON string (never pickled).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from safetensors.torch import save_file
from torch import nn

from serving.errors import InvalidInputError

UInt8Images = npt.NDArray[np.uint8]
# loss(model, batch indices, torch generator) -> scalar loss
StepLoss = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

PCT_WARMUP: Final = 0.05


def to_tensor(images: UInt8Images) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float32 in [-0.5, 0.5]."""
    return (
        torch.from_numpy(np.array(images))
        .permute(0, 3, 1, 2)
        .float()
        .div(255.0)
        .sub(0.5)
    )


def to_uint8(x: torch.Tensor) -> UInt8Images:
    """(n, 3, h, w) float in [-0.5, 0.5] -> (n, h, w, 3) uint8 (rounded, clipped)."""
    arr = x.add(0.5).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    out: UInt8Images = arr.permute(0, 2, 3, 1).contiguous().numpy()
    return out


def gradient_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE of the horizontal and vertical pixel differences (keeps outputs sharp)."""
    dy = (y[..., 1:, :] - y[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])
    dx = (y[..., :, 1:] - y[..., :, :-1]) - (x[..., :, 1:] - x[..., :, :-1])
    return torch.mean(dy**2) + torch.mean(dx**2)


def fit(
    model: nn.Module,
    step_loss: StepLoss,
    n_items: int,
    budget: tuple[int, int],
    seed: int,
    learning_rate: float,
) -> float:
    """Train ``model`` in place; returns the loss of the last batch.

    Args:
        model: the network (its initial weights must already be seeded).
        step_loss: ``(batch indices, torch generator) -> loss``; the generator also
            draws any noise the loss needs, so the run is reproducible.
        n_items: number of training items the indices are drawn from.
        budget: (optimiser steps >= 1, batch size >= 1).
        seed: seeds the batch order and the loss's noise.
        learning_rate: peak learning rate of the one-cycle schedule.

    Raises:
        InvalidInputError: on an empty budget or no training items.
    """
    steps, batch = budget
    if steps < 1 or batch < 1 or n_items < 1:
        raise InvalidInputError(
            f"need steps, batch, items >= 1; got {budget}, {n_items}"
        )
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=learning_rate)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=learning_rate, total_steps=steps, pct_start=PCT_WARMUP
    )
    model.train()
    loss = torch.zeros(())
    for _ in range(steps):
        idx = torch.randint(0, n_items, (batch,), generator=gen)
        loss = step_loss(idx, gen)
        opt.zero_grad()
        torch.autograd.backward(loss)
        opt.step()
        sched.step()
    model.eval()
    return float(loss.detach())


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str]) -> None:
    """Write the state dict as safetensors, metadata as one sorted JSON string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    # One JSON key: safetensors writes several metadata keys in hash-map order.
    meta = {"synthguard": json.dumps(metadata, sort_keys=True)}
    save_file(tensors, str(path), metadata=meta)


def psnr_db(output: UInt8Images, target: UInt8Images) -> float:
    """PSNR (dB, peak 255) between two uint8 image stacks of one shape."""
    mse = float(np.mean((output.astype(np.float64) - target.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(255.0**2 / mse))
