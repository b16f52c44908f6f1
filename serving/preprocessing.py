"""Domain: named, versioned image preprocessing policies shared by training and serving.

Every policy maps a PIL image to a `uint8` array of shape (224, 224, 3) (RGB, HWC).
Normalisation to CLIP's mean/std is a separate step (`normalize`) so that a server
can receive compact `uint8` tensors and normalise in-model.

Memory is bounded for any input: an image more elongated than `MAX_ASPECT_RATIO`
is first cut to its central band of that ratio (only the centre ever reaches the
224 × 224 output), so no intermediate exceeds about ``MAX_ASPECT_RATIO × 256²``
pixels plus the decoded image itself; a 100000 × 1 strip is no longer resized to
22,400,000 × 224. Images within that ratio take exactly the code path they always
did (byte-identical output); beyond it the output differs from the uncut policy by
resampling rounding only.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from serving.errors import InvalidInputError

SIZE: Final = 224
CLIP_MEAN: Final = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD: Final = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)

# Long side / short side above which an image is first cut to its central band;
# 32 keeps the largest resize intermediate at 32 x 256 x 256 px (6 MiB RGB).
MAX_ASPECT_RATIO: Final = 32

PolicyFn = Callable[[Image.Image], npt.NDArray[np.uint8]]


def _to_rgb(img: Image.Image) -> Image.Image:
    img = ImageOps.exif_transpose(img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def _center_crop(img: Image.Image, size: int = SIZE) -> Image.Image:
    # UnivFD's CenterCrop zero-pads images smaller than the crop. Cropping with a box
    # that overhangs the image pads with zeros in one step, so no padded canvas of
    # the whole image is ever built (that canvas is 100000 x 224 for a 100000 x 1).
    w, h = img.size
    pad_x, pad_y = max(size - w, 0) // 2, max(size - h, 0) // 2
    left, top = max(w - size, 0) // 2 - pad_x, max(h - size, 0) // 2 - pad_y
    return img.crop((left, top, left + size, top + size))


def _central_band(img: Image.Image, max_ratio: int = MAX_ASPECT_RATIO) -> Image.Image:
    w, h = img.size
    short = min(w, h)
    if max(w, h) <= max_ratio * short:
        return img
    # same parity as the long side, so the band's centre is the image's centre
    long = max_ratio * short + (max(w, h) - max_ratio * short) % 2
    if w > h:
        left = (w - long) // 2
        return img.crop((left, 0, left + long, h))
    top = (h - long) // 2
    return img.crop((0, top, w, top + long))


def _resize_short(
    img: Image.Image, short: int, resample: Image.Resampling
) -> Image.Image:
    img = _central_band(img)
    w, h = img.size
    s = short / min(w, h)
    new = (max(short, round(w * s)), max(short, round(h * s)))
    return img.resize(new, resample=resample)


def clip_default(img: Image.Image) -> npt.NDArray[np.uint8]:
    """CLIP's own preprocessing: bicubic resize of the short side to 224, centre crop."""
    img = _resize_short(_to_rgb(img), SIZE, Image.Resampling.BICUBIC)
    return np.asarray(_center_crop(img), dtype=np.uint8)


def ufd_eval(img: Image.Image) -> npt.NDArray[np.uint8]:
    """UnivFD's test transform: centre crop 224 with no resize (zero-pad if smaller)."""
    return np.asarray(_center_crop(_to_rgb(img)), dtype=np.uint8)


def resize256_crop224(img: Image.Image) -> npt.NDArray[np.uint8]:
    """UnivFD's validation transform: bilinear resize of the short side to 256, crop 224."""
    img = _resize_short(_to_rgb(img), 256, Image.Resampling.BILINEAR)
    return np.asarray(_center_crop(img), dtype=np.uint8)


POLICIES: Final[dict[str, PolicyFn]] = {
    "clip_default": clip_default,
    "ufd_eval": ufd_eval,
    "resize256_crop224": resize256_crop224,
}
# Bump a policy's version whenever its output changes; it is stored with every feature.
POLICY_VERSIONS: Final[dict[str, int]] = {
    "clip_default": 1,
    "ufd_eval": 1,
    "resize256_crop224": 1,
}
DEFAULT_POLICY: Final = "clip_default"


def policy_id(name: str) -> str:
    """Return the versioned identifier of a policy, e.g. ``clip_default@1``."""
    get_policy(name)
    return f"{name}@{POLICY_VERSIONS[name]}"


def get_policy(name: str) -> PolicyFn:
    """Look up a preprocessing policy by name.

    Raises:
        InvalidInputError: if the name is unknown.
    """
    try:
        return POLICIES[name]
    except KeyError:
        known = ", ".join(sorted(POLICIES))
        raise InvalidInputError(
            f"unknown preprocessing policy {name!r}; known: {known}"
        ) from None


def normalize(batch: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
    """Turn uint8 images (n, 224, 224, 3) into CLIP-normalised float32 (n, 3, 224, 224)."""
    if batch.ndim != 4 or batch.shape[-1] != 3:
        raise InvalidInputError(
            f"expected (n, h, w, 3) uint8 images, got shape {batch.shape}"
        )
    x = batch.astype(np.float32) / 255.0
    x = (x - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
