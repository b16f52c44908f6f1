"""Adapter: a small variational autoencoder trained here, a latent-decoder generator.

Latent diffusion models draw their images through a VAE decoder; this family stands
for that mechanism. The encoder maps an image to a Gaussian posterior over a small
latent (``LATENT_CHANNELS`` channels at 1/4 resolution: 4x fewer values than
pixels); a fake is the decoder's image of a latent *sampled* from that posterior
(seeded). The decoder differs from the autoencoders' (``autoencoders.py``): residual
blocks and *bilinear* 2x up-sampling followed by convolutions. The loss is MSE plus
a gradient-domain term (sharpness) plus a small KL term.
"""

from __future__ import annotations

import time
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

LATENT_CHANNELS: Final = 12
MULTIPLE: Final = 4
LEARNING_RATE: Final = 2e-3
GRADIENT_LOSS_WEIGHT: Final = 30.0
KL_WEIGHT: Final = 1e-4
LOGVAR_RANGE: Final = (-12.0, 4.0)


class _ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = x + self.conv2(functional.silu(self.conv1(x)))
        return out


class _BilinearUp(nn.Module):
    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        up = functional.interpolate(
            x, scale_factor=2.0, mode="bilinear", align_corners=False
        )
        out: torch.Tensor = functional.silu(self.conv(up))
        return out


class LatentVae(nn.Module):
    """Encoder to a (mean, log-variance) latent at 1/4 resolution, and its decoder."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 64, 4, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(64, 2 * LATENT_CHANNELS, 1),
        )  # fmt: skip
        self.decoder = nn.Sequential(
            nn.Conv2d(LATENT_CHANNELS, 64, 3, padding=1), _ResBlock(64),
            _BilinearUp(64, 48), _BilinearUp(48, 32),
            nn.Conv2d(32, 3, 3, padding=1),
        )  # fmt: skip

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Posterior mean and (clamped) log-variance of ``x`` (sides multiples of 4)."""
        mean, logvar = self.encoder(x).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Image (pixels in about [-0.5, 0.5]) of a latent."""
        out: torch.Tensor = self.decoder(z)
        return out

    def forward(self, x: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Decode the latent ``mean + exp(logvar / 2) * noise`` of ``x``."""
        mean, logvar = self.encode(x)
        return self.decode(mean + torch.exp(0.5 * logvar) * noise)


def _loss(
    model: LatentVae, data: torch.Tensor, idx: torch.Tensor, gen: torch.Generator
) -> torch.Tensor:
    x = data[idx]
    mean, logvar = model.encode(x)
    z = mean + torch.exp(0.5 * logvar) * torch.randn(mean.shape, generator=gen)
    y = model.decode(z)
    kl = 0.5 * torch.mean(mean**2 + logvar.exp() - 1.0 - logvar)
    rec = torch.mean((y - x) ** 2) + GRADIENT_LOSS_WEIGHT * tr.gradient_loss(y, x)
    return rec + KL_WEIGHT * kl


def train_vae(
    patches: tr.UInt8Images, budget: tuple[int, int], seed: int
) -> tuple[LatentVae, float]:
    """Train on (n, p, p, 3) uint8 patches (p % 4 == 0); returns the model, last loss.

    Raises:
        InvalidInputError: on unusable patches or an empty budget.
    """
    if patches.ndim != 4 or patches.shape[1] % MULTIPLE:
        raise InvalidInputError(f"patches: (n, p, p, 3), p % 4 == 0; {patches.shape}")
    data = tr.to_tensor(patches)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LatentVae()
        loss = tr.fit(
            model,
            lambda idx, gen: _loss(model, data, idx, gen),
            len(data),
            budget,
            seed,
            LEARNING_RATE,
        )
    return model, loss


def generate(model: LatentVae, img: Image.Image, seed: int) -> Image.Image:
    """Decode a latent sampled (seeded) from the posterior of ``img``.

    Raises:
        InvalidInputError: if a side of ``img`` is not a multiple of 4.
    """
    if img.width % MULTIPLE or img.height % MULTIPLE:
        raise InvalidInputError(f"VAE needs sides that are multiples of 4: {img.size}")
    x = tr.to_tensor(np.asarray(img.convert("RGB"), dtype=np.uint8)[None])
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        mean, _ = model.encode(x)
        y = model(x, torch.randn(mean.shape, generator=gen))
    return Image.fromarray(tr.to_uint8(y)[0])


def fit_and_save(
    patches: tuple[tr.UInt8Images, tr.UInt8Images],
    budget: tuple[int, int],
    seed: int,
    path: Path,
) -> tuple[LatentVae, dict[str, Any]]:
    """Train the VAE, save it as safetensors and describe it for the manifest.

    Returns:
        The model (eval mode) and its record: sha256, PSNRs, seconds.
    """
    t0 = time.perf_counter()
    train, heldout = patches
    model, loss = train_vae(train, budget, seed)
    tr.save_weights(model, path, {"kind": "latent_vae", "seed": str(seed)})
    recon = np.stack(
        [
            np.asarray(generate(model, Image.fromarray(p), seed + i))
            for i, p in enumerate(heldout)
        ]
    )
    return model, {
        "model_id": f"synthguard/vae_latent@seed{seed}",
        "weights_sha256": sha256_file(path),
        "architecture": f"VAE, latent {LATENT_CHANNELS} ch at 1/4, bilinear-up decoder",
        "steps": budget[0],
        "batch_size": budget[1],
        "final_train_loss": round(loss, 6),
        "kl_weight": KL_WEIGHT,
        "gradient_loss_weight": GRADIENT_LOSS_WEIGHT,
        "train_patches": len(train),
        "psnr_db_heldout": round(tr.psnr_db(recon, heldout), 2),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
