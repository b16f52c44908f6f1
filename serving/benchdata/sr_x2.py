"""Adapter: two more 2x super-resolution mechanisms, trained here.

The benchmark's other super-resolution families up-sample *after* their convolutions
with a learned layer: ESRGAN-slim and ESPCN by pixel shuffle, the SRGAN-style net by a
transposed convolution. Held out, each of the 2x ones was the hardest fold (docs §9b),
taught by only two other up-samplers. These two add the remaining classic designs:

- ``vdsr``: *pre-up-sampling* (SRCNN, Dong et al. 2014; VDSR, Kim et al. 2016): the
  image is first bicubic-up-sampled 2x, then convolutions at the high resolution
  predict a residual. Trained with MSE, as the papers do.
- ``resize_conv``: convolutions at low resolution, a *nearest-neighbour 2x then
  convolution* up-sampler (the resize-convolution of Odena et al. 2016), a bicubic 2x
  skip. Trained with L1 (EDSR, Lim et al. 2017) plus the gradient-domain term.

A fake is the network's 2x image of a bicubic 1/2 crop; its real is the bicubic 2x of
another such crop, so both classes share the resolution path (as for ``srgan_x2``).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Final

import torch
from torch import nn

from serving.benchdata import subpixel as sp
from serving.benchdata import training as tr
from serving.errors import InvalidInputError
from serving.hashing import sha256_file

SCALE: Final = 2
LEARNING_RATE: Final = 1e-3
GRADIENT_LOSS_WEIGHT: Final = 10.0
DESIGNS: Final = {
    "vdsr": "bicubic 2x, then 4 convs 64 ch ReLU at high res predict a residual; MSE",
    "resize_conv": "2 convs 64 ch at low res, nearest 2x + conv 32 ch, bicubic skip; "
    "L1 + gradient",
}


class SrX2(nn.Module):
    """(n, 3, h, w) low-resolution in [-0.5, 0.5] -> (n, 3, 2h, 2w).

    Args:
        design: one of ``DESIGNS``.
    """

    scale: Final = SCALE

    def __init__(self, design: str) -> None:
        super().__init__()
        if design not in DESIGNS:
            raise InvalidInputError(f"design: one of {sorted(DESIGNS)}, got {design!r}")
        self.design = design
        if design == "vdsr":
            self.body = nn.Sequential(
                nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                nn.Conv2d(64, 3, 3, padding=1),
            )  # fmt: skip
        else:
            self.body = nn.Sequential(
                nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(),
                nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
                nn.Upsample(scale_factor=float(SCALE), mode="nearest"),
                nn.Conv2d(64, 32, 3, padding=1), nn.ReLU(),
                nn.Conv2d(32, 3, 3, padding=1),
            )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Super-resolve ``x`` 2x."""
        base = nn.functional.interpolate(
            x, scale_factor=float(SCALE), mode="bicubic", align_corners=False
        )
        residual = self.body(base if self.design == "vdsr" else x)
        out: torch.Tensor = base + residual
        return out


def fit_and_save(
    design: str,
    patches: tuple[tr.UInt8Images, tr.UInt8Images],
    budget: tuple[int, int],
    seed: int,
    path: Path,
) -> tuple[SrX2, dict[str, Any]]:
    """Train one design on (n, p, p, 3) train patches, save it, describe it.

    Returns:
        The model (eval mode) and its manifest record: sha256, held-out PSNR against
        bicubic, seconds.
    """
    t0 = time.perf_counter()
    train, heldout = patches
    hr, lr = tr.to_tensor(train), tr.to_tensor(sp.low_res(train, SCALE))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SrX2(design)

        def loss(idx: torch.Tensor, _gen: torch.Generator) -> torch.Tensor:
            y, x = model(lr[idx]), hr[idx]
            if design == "vdsr":
                return torch.mean((y - x) ** 2)
            return torch.mean(torch.abs(y - x)) + GRADIENT_LOSS_WEIGHT * (
                tr.gradient_loss(y, x)
            )

        last = tr.fit(model, loss, len(hr), budget, seed, LEARNING_RATE)
    family = f"{design}_x2"
    tr.save_weights(model, path, {"kind": family, "seed": str(seed)})
    return model, {
        "model_id": f"synthguard/{family}@seed{seed}",
        "weights_sha256": sha256_file(path),
        "architecture": DESIGNS[design],
        "steps": budget[0],
        "batch_size": budget[1],
        "final_train_loss": round(last, 6),
        "train_patches": len(train),
        **sp.heldout_psnr(model, heldout, SCALE),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
