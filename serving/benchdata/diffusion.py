"""Adapter: a small diffusion model trained here, sampled SDEdit-style from real crops.

The denoiser is a noise-conditional U-Net (three resolutions, residual blocks,
nearest-neighbour up-sampling followed by a convolution as in the Stable Diffusion
decoder, skip connections) with EDM preconditioning (Karras et al. 2022): it
predicts the clean image ``D(x; sigma)`` from ``x = x0 + sigma * n``. It is trained
on train-split photo patches with sigma log-uniform in ``[SIGMA_MIN, SIGMA_MAX]``.

A fake is drawn the way SDEdit (Meng et al. 2022) edits an image: a real crop is
noised to ``sigma_start`` and then denoised by the Euler-ancestral sampler over a
geometric sigma ladder (fresh noise at every step), so that the model regenerates
every detail finer than the noise while the content stays photo-like. Pixels are in
``[-0.5, 0.5]``; everything is seeded and runs on the CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional

from serving.benchdata import training as tr
from serving.errors import InvalidInputError
from serving.hashing import sha256_file

SIGMA_DATA: Final = 0.25
SIGMA_MIN: Final = 0.004
SIGMA_MAX: Final = 0.5
LEARNING_RATE: Final = 2e-3
CHANNELS: Final = (16, 32, 64)
MULTIPLE: Final = 4  # two stride-2 levels


@dataclass(frozen=True)
class SdeditSchedule:
    """How a fake is sampled from a real crop.

    Attributes:
        sigma_start: noise level the real crop is taken to (pixels in [-0.5, 0.5]).
        sigma_end: last noise level before the final clean prediction.
        steps: denoiser evaluations.
        eta: share of each step's noise that is fresh (1: Euler ancestral, 0:
            deterministic DDIM-like Euler; the noise of the noised crop is carried).
    """

    sigma_start: float = 0.12
    sigma_end: float = 0.004
    steps: int = 6
    eta: float = 1.0

    def sigmas(self) -> list[float]:
        """Geometric ladder from ``sigma_start`` to ``sigma_end`` (``steps`` values)."""
        if self.steps < 1 or not 0 < self.sigma_end <= self.sigma_start:
            raise InvalidInputError(f"bad SDEdit schedule {self}")
        if self.steps == 1:
            return [self.sigma_start]
        ratio = (self.sigma_end / self.sigma_start) ** (1 / (self.steps - 1))
        return [self.sigma_start * ratio**i for i in range(self.steps)]


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.conv2(functional.silu(self.conv1(x)))
        return out


class _Up(nn.Module):
    """Nearest 2x up-sampling, a convolution, then fusion with the skip input."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.fuse = nn.Conv2d(2 * c_out, c_out, 1)
        self.block = _ResBlock(c_out)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        up = self.conv(functional.interpolate(x, scale_factor=2.0, mode="nearest"))
        out: torch.Tensor = self.block(self.fuse(torch.cat([up, skip], dim=1)))
        return out


class Denoiser(nn.Module):
    """EDM-preconditioned U-Net: ``forward(x, sigma)`` is the clean-image estimate."""

    def __init__(self) -> None:
        super().__init__()
        c1, c2, c3 = CHANNELS
        self.stem = nn.Conv2d(4, c1, 3, padding=1)
        self.enc1 = _ResBlock(c1)
        self.down1 = nn.Conv2d(c1, c2, 3, stride=2, padding=1)
        self.enc2 = _ResBlock(c2)
        self.down2 = nn.Conv2d(c2, c3, 3, stride=2, padding=1)
        self.embed = nn.Sequential(nn.Linear(1, c3), nn.SiLU(), nn.Linear(c3, c3))
        self.mid1 = _ResBlock(c3)
        self.mid2 = _ResBlock(c3)
        self.up2 = _Up(c3, c2)
        self.up1 = _Up(c2, c1)
        self.head = nn.Conv2d(c1, 3, 3, padding=1)

    def raw(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """The network ``F`` on the preconditioned input; ``c_noise`` is (n,)."""
        cmap = c_noise.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        h1 = self.enc1(functional.silu(self.stem(torch.cat([x, cmap], dim=1))))
        h2 = self.enc2(functional.silu(self.down1(h1)))
        h3 = functional.silu(self.down2(h2))
        h3 = h3 + self.embed(c_noise.view(-1, 1))[:, :, None, None]
        h3 = self.mid2(self.mid1(h3))
        out: torch.Tensor = self.head(functional.silu(self.up1(self.up2(h3, h2), h1)))
        return out

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Clean estimate of ``x`` (n, 3, h, w), h and w multiples of 4; sigma (n,)."""
        s = sigma.view(-1, 1, 1, 1)
        var = s**2 + SIGMA_DATA**2
        c_skip, c_out = SIGMA_DATA**2 / var, s * SIGMA_DATA / var.sqrt()
        return c_skip * x + c_out * self.raw(x / var.sqrt(), torch.log(sigma) / 4)


def _training_loss(
    model: Denoiser, data: torch.Tensor, idx: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    """EDM loss: lambda(sigma)-weighted MSE of ``D`` == plain MSE of ``F``'s target."""
    x0 = data[idx]
    u = torch.rand(len(idx), generator=gen)
    sigma = torch.exp(math.log(SIGMA_MIN) + u * math.log(SIGMA_MAX / SIGMA_MIN))
    noisy = x0 + sigma.view(-1, 1, 1, 1) * torch.randn(x0.shape, generator=gen)
    s = sigma.view(-1, 1, 1, 1)
    var = s**2 + SIGMA_DATA**2
    c_skip, c_out = SIGMA_DATA**2 / var, s * SIGMA_DATA / var.sqrt()
    target = (x0 - c_skip * noisy) / c_out
    pred = model.raw(noisy / var.sqrt(), torch.log(sigma) / 4)
    return torch.mean((pred - target) ** 2)


def train_denoiser(
    patches: tr.UInt8Images, budget: tuple[int, int], seed: int
) -> tuple[Denoiser, float]:
    """Train the denoiser on (n, p, p, 3) uint8 patches; returns it and the last loss.

    Raises:
        InvalidInputError: if the patch side is not a multiple of 4 or the budget is empty.
    """
    if patches.ndim != 4 or patches.shape[1] % MULTIPLE:
        raise InvalidInputError(f"patches: (n, p, p, 3), p % 4 == 0; {patches.shape}")
    data = tr.to_tensor(patches)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Denoiser()
        loss = tr.fit(
            model,
            lambda idx, gen: _training_loss(model, data, idx, gen),
            len(data),
            budget,
            seed,
            LEARNING_RATE,
        )
    return model, loss


def sdedit(
    model: Denoiser, img: Image.Image, schedule: SdeditSchedule, seed: int
) -> Image.Image:
    """Noise ``img`` to ``sigma_start`` and denoise it (Euler ancestral, seeded).

    Raises:
        InvalidInputError: if a side of ``img`` is not a multiple of 4.
    """
    if img.width % MULTIPLE or img.height % MULTIPLE:
        raise InvalidInputError(
            f"SDEdit needs sides that are multiples of 4: {img.size}"
        )
    gen = torch.Generator().manual_seed(seed)
    x0 = tr.to_tensor(np.asarray(img.convert("RGB"), dtype=np.uint8)[None])
    sigmas = schedule.sigmas()
    x = x0 + sigmas[0] * torch.randn(x0.shape, generator=gen)
    with torch.no_grad():
        for i, s in enumerate(sigmas):
            denoised = model(x, torch.tensor([s]))
            if i + 1 == len(sigmas):
                x = denoised
                break
            nxt = sigmas[i + 1]
            up = min(nxt, schedule.eta * math.sqrt(nxt**2 * (s**2 - nxt**2) / s**2))
            down = math.sqrt(nxt**2 - up**2)
            noise = torch.randn(x.shape, generator=gen)
            x = denoised + (x - denoised) / s * down + up * noise
    return Image.fromarray(tr.to_uint8(x)[0])


def fit_and_save(
    patches: tuple[tr.UInt8Images, tr.UInt8Images],
    budget: tuple[int, int],
    seed: int,
    path: Path,
    schedule: SdeditSchedule,
) -> tuple[Denoiser, dict[str, Any]]:
    """Train the denoiser, save it as safetensors and describe it for the manifest.

    Args:
        patches: (train, held-out) uint8 patches, each (n, p, p, 3).
        budget: (steps, batch size).
        seed: training seed.
        path: where the ``.safetensors`` file goes.
        schedule: the SDEdit sampling schedule (recorded).

    Returns:
        The model (eval mode) and its record (held-out PSNR of one denoising at
        ``sigma_start`` and of the full SDEdit, against the clean patch).
    """
    t0 = time.perf_counter()
    train, heldout = patches
    model, loss = train_denoiser(train, budget, seed)
    tr.save_weights(model, path, {"kind": "edm_unet_denoiser", "seed": str(seed)})
    edited = np.stack(
        [
            np.asarray(sdedit(model, Image.fromarray(p), schedule, seed + i))
            for i, p in enumerate(heldout[:32])
        ]
    )
    return model, {
        "model_id": f"synthguard/diffusion_sdedit@seed{seed}",
        "weights_sha256": sha256_file(path),
        "architecture": "U-Net 16/32/64 ch, nearest-up + conv, EDM preconditioning",
        "steps": budget[0],
        "batch_size": budget[1],
        "final_train_loss": round(loss, 6),
        "train_sigma_range": [SIGMA_MIN, SIGMA_MAX],
        "sampler": "SDEdit, Euler ancestral",
        "schedule": {
            "sigma_start": schedule.sigma_start,
            "sigma_end": schedule.sigma_end,
            "steps": schedule.steps,
        },
        "train_patches": len(train),
        "psnr_db_sdedit_heldout": round(tr.psnr_db(edited, heldout[:32]), 2),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
