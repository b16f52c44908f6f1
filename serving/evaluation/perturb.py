"""Domain: deterministic robustness perturbations on PIL images (both classes alike).

Every perturbation returns a new RGB image and is deterministic: JPEG, resize, blur
and crop have no randomness; additive noise draws from a generator seeded by
(`seed`, a digest of the image's pixels), so the same image always gets the same
noise and different images get independent noise.

Downscaling does **not** re-upscale: the encoder's preprocessing policy decides how
a smaller image reaches 224 px (``clip_default`` resizes up, ``ufd_eval`` zero-pads),
which is exactly what a deployed detector would see.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from typing import Final

import numpy as np
from PIL import Image, ImageFilter

Perturbation = Callable[[Image.Image], Image.Image]


def _rgb(img: Image.Image) -> Image.Image:
    return img if img.mode == "RGB" else img.convert("RGB")


def jpeg(quality: int) -> Perturbation:
    """Re-encode in memory as JPEG at `quality` (Pillow defaults otherwise)."""

    def apply(img: Image.Image) -> Image.Image:
        buf = io.BytesIO()
        _rgb(img).save(buf, format="JPEG", quality=quality)
        buf.seek(0)
        with Image.open(buf) as out:
            return out.convert("RGB")

    return apply


def downscale(factor: float) -> Perturbation:
    """Bicubic downscale of both sides by `factor` (no re-upscaling)."""

    def apply(img: Image.Image) -> Image.Image:
        w, h = img.size
        size = (max(1, round(w * factor)), max(1, round(h * factor)))
        return _rgb(img).resize(size, resample=Image.Resampling.BICUBIC)

    return apply


def blur(sigma: float) -> Perturbation:
    """Gaussian blur with standard deviation `sigma` pixels (PIL GaussianBlur)."""

    def apply(img: Image.Image) -> Image.Image:
        return _rgb(img).filter(ImageFilter.GaussianBlur(radius=sigma))

    return apply


def noise(sigma: float, seed: int = 0) -> Perturbation:
    """Additive Gaussian noise of std `sigma` in uint8 units, rounded and clipped."""

    def apply(img: Image.Image) -> Image.Image:
        arr = np.asarray(_rgb(img), dtype=np.uint8)
        digest = hashlib.blake2b(arr.tobytes(), digest_size=8)
        digest.update(repr(arr.shape).encode())
        rng = np.random.default_rng([seed, int.from_bytes(digest.digest(), "big")])
        noisy = arr.astype(np.float64) + rng.normal(0.0, sigma, size=arr.shape)
        return Image.fromarray(np.clip(np.rint(noisy), 0, 255).astype(np.uint8), "RGB")

    return apply


def crop(frac: float) -> Perturbation:
    """Centre crop keeping `frac` of each side (no resize)."""

    def apply(img: Image.Image) -> Image.Image:
        w, h = img.size
        cw, ch = max(1, round(w * frac)), max(1, round(h * frac))
        left, top = (w - cw) // 2, (h - ch) // 2
        return _rgb(img).crop((left, top, left + cw, top + ch))

    return apply


def _registry() -> dict[str, Perturbation]:
    reg: dict[str, Perturbation] = {}
    reg.update({f"jpeg_q{q}": jpeg(q) for q in (95, 75, 50, 30)})
    reg.update({f"resize_{f:g}": downscale(f) for f in (0.75, 0.5, 0.25)})
    reg.update({f"blur_{s:g}": blur(s) for s in (0.5, 1.0, 2.0)})
    reg.update({f"noise_{s:g}": noise(s) for s in (5.0, 10.0)})
    reg.update({f"crop_{f:g}": crop(f) for f in (0.9, 0.8, 0.5)})
    return reg


PERTURBATIONS: Final[dict[str, Perturbation]] = _registry()
ROBUSTNESS_SUITE: Final[tuple[str, ...]] = tuple(PERTURBATIONS)
QUICK_SUITE: Final[tuple[str, ...]] = ("jpeg_q75", "resize_0.5")
