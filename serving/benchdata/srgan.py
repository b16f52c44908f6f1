"""Adapter: a GAN-trained 2x super-resolution network (SRGAN-style) trained here.

The third super-resolution mechanism of the benchmark, beside ESRGAN-slim (pretrained,
pixel shuffle) and ESPCN (trained here, pixel shuffle, MSE): convolutions at low
resolution, a *transposed-convolution* 2x up-sampler, a bicubic 2x skip, and the
reconstruction + PatchGAN hinge loss of ``adversarial`` (Ledig et al. 2017 train SR
against a critic for the same reason: sharper, texture-hallucinating outputs). A fake
is the network's 2x image of a bicubic 1/2 crop; its real is the bicubic 2x of another
such crop, so both classes share the resolution path.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from serving.benchdata import adversarial as adv
from serving.benchdata import subpixel as sp
from serving.benchdata import training as tr
from serving.hashing import sha256_file

SCALE: Final = 2


class SrganX2(nn.Module):
    """(n, 3, h, w) low-resolution in [-0.5, 0.5] -> (n, 3, 2h, 2w)."""

    scale: Final = SCALE

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, 64, 3, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(64, 64, 3, padding=1), nn.LeakyReLU(0.1),
            nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.LeakyReLU(0.1),
            nn.Conv2d(32, 3, 3, padding=1),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``x`` 2x."""
        base = nn.functional.interpolate(
            x, scale_factor=float(SCALE), mode="bicubic", align_corners=False
        )
        out: torch.Tensor = base + self.body(x)
        return out


def fit_and_save(
    patches: tuple[tr.UInt8Images, tr.UInt8Images],
    budget: tuple[int, int],
    seed: int,
    path: Path,
) -> tuple[SrganX2, dict[str, Any]]:
    """Train against a PatchGAN critic, save as safetensors, describe for the manifest.

    Returns:
        The model and its record: sha256, held-out PSNR vs bicubic, seconds.
    """
    t0 = time.perf_counter()
    train, heldout = patches
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SrganX2()
    pairs = (tr.to_tensor(sp.low_res(train, SCALE)), tr.to_tensor(train))
    loss = adv.train_adversarial(model, pairs, budget, seed)
    tr.save_weights(model, path, {"kind": "srgan_x2", "seed": str(seed)})
    return model, {
        "model_id": f"synthguard/srgan_x2@seed{seed}",
        "weights_sha256": sha256_file(path),
        "architecture": "3 convs at low res, tconv 2x + bicubic skip, PatchGAN hinge",
        "adversarial_weight": adv.ADV_WEIGHT,
        "steps": budget[0],
        "batch_size": budget[1],
        "final_train_loss": round(loss, 6),
        "train_patches": len(train),
        **sp.heldout_psnr(model, heldout, SCALE),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
