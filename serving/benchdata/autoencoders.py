"""Adapter: small fully-convolutional autoencoders trained here as real neural generators.

Four variants share one encoder (a learned stride-4 analysis convolution, 4x
down-sampling) and one decoder shape; they differ only in the 2x up-sampling operator
used twice by the decoder: a transposed convolution (``tconv``), nearest-neighbour
up-sampling followed by a convolution (``nnconv``), a convolution followed by a
pixel shuffle (``pixelshuffle``), or bilinear up-sampling followed by a convolution
(``bilinear``, the up-sampler of most latent-diffusion decoders). The latent is over-complete (64 channels at 1/4
resolution for 48 input values per cell) and the loss adds a gradient-domain term,
so that reconstructions stay sharp: blurry fakes make JPEG file size a shortcut (with
MSE alone, 600 steps, ``nnconv`` fakes were 23 % smaller JPEGs, size AUC 0.26).
Training is seeded, CPU-only and bounded by a step count; weights are saved as
safetensors, never pickled.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from serving.errors import InvalidInputError
from serving.hashing import sha256_file

logger = logging.getLogger(__name__)

UPSAMPLERS: Final = ("tconv", "nnconv", "pixelshuffle", "bilinear")
LATENT_CHANNELS: Final = 64
HIDDEN_CHANNELS: Final = 64
DOWNSAMPLE: Final = 4
LEARNING_RATE: Final = 3e-3
GRADIENT_LOSS_WEIGHT: Final = 30.0

UInt8Images = npt.NDArray[np.uint8]


def _upsample2x(kind: str, c_in: int, c_out: int) -> nn.Module:
    if kind == "tconv":
        return nn.ConvTranspose2d(c_in, c_out, kernel_size=4, stride=2, padding=1)
    if kind == "nnconv":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="nearest"),
            nn.Conv2d(c_in, c_out, 3, padding=1),
        )
    if kind == "bilinear":
        return nn.Sequential(
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
            nn.Conv2d(c_in, c_out, 3, padding=1),
        )
    if kind == "pixelshuffle":
        return nn.Sequential(
            nn.Conv2d(c_in, 4 * c_out, 3, padding=1), nn.PixelShuffle(2)
        )
    raise InvalidInputError(
        f"unknown up-sampler {kind!r}; expected one of {UPSAMPLERS}"
    )


class ConvAutoencoder(nn.Module):
    """Encoder (4x down) + decoder (two 2x up-sampling operators), NCHW in [-0.5, 0.5]."""

    def __init__(self, upsampler: str) -> None:
        super().__init__()
        self.upsampler = upsampler
        self.encoder = nn.Sequential(
            nn.Conv2d(3, LATENT_CHANNELS, kernel_size=DOWNSAMPLE, stride=DOWNSAMPLE),
            nn.LeakyReLU(0.1),
        )
        self.decoder = nn.Sequential(
            _upsample2x(upsampler, LATENT_CHANNELS, HIDDEN_CHANNELS),
            nn.LeakyReLU(0.1),
            _upsample2x(upsampler, HIDDEN_CHANNELS, 3),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Reconstruct ``x``: (n, 3, h, w) float32 with h, w multiples of 4."""
        out: torch.Tensor = self.decoder(self.encoder(x))
        return out


@dataclass(frozen=True)
class TrainedAutoencoder:
    """A trained autoencoder and its training record.

    Attributes:
        model: the network, in eval mode.
        upsampler: one of ``UPSAMPLERS``.
        steps: optimiser steps run.
        final_loss: loss of the last batch (pixels in [0, 1]).
    """

    model: ConvAutoencoder
    upsampler: str
    steps: int
    final_loss: float


def _to_tensor(images: UInt8Images) -> torch.Tensor:
    """(n, h, w, 3) uint8 -> (n, 3, h, w) float32 in [-0.5, 0.5]."""
    return (
        torch.from_numpy(np.array(images))
        .permute(0, 3, 1, 2)
        .float()
        .div(255.0)
        .sub(0.5)
    )


def _to_uint8(x: torch.Tensor) -> UInt8Images:
    arr = x.add(0.5).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
    return arr.permute(0, 2, 3, 1).contiguous().numpy()


def reconstruction_loss(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """MSE plus ``GRADIENT_LOSS_WEIGHT`` x MSE of horizontal and vertical differences."""
    dy = (y[..., 1:, :] - y[..., :-1, :]) - (x[..., 1:, :] - x[..., :-1, :])
    dx = (y[..., :, 1:] - y[..., :, :-1]) - (x[..., :, 1:] - x[..., :, :-1])
    edges = torch.mean(dy**2) + torch.mean(dx**2)
    return torch.mean((y - x) ** 2) + GRADIENT_LOSS_WEIGHT * edges


def train_autoencoder(
    upsampler: str, patches: UInt8Images, steps: int, batch_size: int, seed: int
) -> TrainedAutoencoder:
    """Train one variant with Adam, a one-cycle schedule and :func:`reconstruction_loss`.

    Args:
        upsampler: one of ``UPSAMPLERS``.
        patches: (n, p, p, 3) uint8 training patches, p a multiple of 4.
        steps: number of optimiser steps (>= 1).
        batch_size: patches per step.
        seed: seeds the initial weights and the batch order.

    Returns:
        The trained model and its record.

    Raises:
        InvalidInputError: on an unknown up-sampler or unusable patches.
    """
    if patches.ndim != 4 or patches.shape[3] != 3 or patches.shape[1] % DOWNSAMPLE:
        raise InvalidInputError(
            f"patches must be (n, p, p, 3), p % 4 == 0; got {patches.shape}"
        )
    if steps < 1:
        raise InvalidInputError(f"steps must be >= 1, got {steps}")
    data = _to_tensor(patches)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ConvAutoencoder(upsampler)
        gen = torch.Generator().manual_seed(seed)
        opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        sched = torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=LEARNING_RATE, total_steps=steps, pct_start=0.05
        )
        loss = torch.zeros(())
        for _ in range(steps):
            x = data[torch.randint(0, len(data), (batch_size,), generator=gen)]
            loss = reconstruction_loss(model(x), x)
            opt.zero_grad()
            torch.autograd.backward(loss)
            opt.step()
            sched.step()
    model.eval()
    return TrainedAutoencoder(model, upsampler, steps, float(loss.detach()))


def reconstruct(
    model: ConvAutoencoder, images: UInt8Images, batch_size: int = 16
) -> UInt8Images:
    """Run the autoencoder on (n, h, w, 3) uint8 images; returns the same shape, uint8."""
    out: list[UInt8Images] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            out.append(_to_uint8(model(_to_tensor(images[start : start + batch_size]))))
    return np.concatenate(out) if out else np.empty_like(images)


def psnr_db(model: ConvAutoencoder, images: UInt8Images) -> float:
    """PSNR (dB, peak 255) of the 8-bit reconstructions over all of ``images``."""
    recon = reconstruct(model, images).astype(np.float64)
    mse = float(np.mean((recon - images.astype(np.float64)) ** 2))
    return float("inf") if mse == 0.0 else float(10.0 * np.log10(255.0**2 / mse))


def reconstruct_image(model: ConvAutoencoder, img: Image.Image) -> Image.Image:
    """Reconstruct one RGB image whose sides are multiples of 4."""
    return Image.fromarray(reconstruct(model, np.asarray(img, dtype=np.uint8)[None])[0])


def save_autoencoder(
    trained: TrainedAutoencoder, path: Path, metadata: dict[str, str]
) -> None:
    """Write the weights as safetensors (no pickle), metadata as one JSON string."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().contiguous() for k, v in trained.model.state_dict().items()
    }
    meta = {"upsampler": trained.upsampler, "steps": str(trained.steps), **metadata}
    # One JSON key: safetensors writes several metadata keys in hash-map order.
    save_file(
        tensors, str(path), metadata={"synthguard": json.dumps(meta, sort_keys=True)}
    )


def fit_and_save(
    upsampler: str,
    patches: tuple[UInt8Images, UInt8Images],
    budget: tuple[int, int],
    seed: int,
    path: Path,
) -> tuple[ConvAutoencoder, dict[str, Any]]:
    """Train a variant, save it as safetensors and describe it for the manifest.

    Args:
        upsampler: one of ``UPSAMPLERS``.
        patches: (train, held-out) uint8 patches, each (n, p, p, 3).
        budget: (steps, batch size).
        seed: training seed.
        path: where the ``.safetensors`` file goes.

    Returns:
        The model (eval mode) and its record: file sha256, PSNRs, seconds.
    """
    t0 = time.perf_counter()
    train, heldout = patches
    trained = train_autoencoder(upsampler, train, budget[0], budget[1], seed)
    save_autoencoder(trained, path, {"seed": str(seed)})
    return trained.model, {
        "model_id": f"synthguard/ae_{upsampler}@seed{seed}",
        "weights_sha256": sha256_file(path),
        "upsampler": upsampler,
        "steps": trained.steps,
        "batch_size": budget[1],
        "final_train_loss": round(trained.final_loss, 6),
        "gradient_loss_weight": GRADIENT_LOSS_WEIGHT,
        "train_patches": len(train),
        "heldout_patches": len(heldout),
        "psnr_db_train": round(psnr_db(trained.model, train[: len(heldout)]), 2),
        "psnr_db_heldout": round(psnr_db(trained.model, heldout), 2),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }


def stack_images(images: Sequence[Image.Image]) -> UInt8Images:
    """Stack equally sized RGB images into (n, h, w, 3) uint8."""
    return np.stack([np.asarray(im.convert("RGB"), dtype=np.uint8) for im in images])
