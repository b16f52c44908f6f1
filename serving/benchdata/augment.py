"""Domain: the training-split augmentation of the benchmark (Wang et al. 2020 recipe).

As in CNNDetection, UnivFD and RINE: Gaussian blur with sigma ~ U[0, 3] with
probability 0.5 and, independently, a JPEG round trip at quality ~ U{30..100} with
probability 0.5. Only the train split is augmented; both images of a pair get the same
draw (so the two classes see one augmentation distribution), then the pair's format
path. Draws come from the caller's seeded generator.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Final

import numpy as np
from PIL import Image, ImageFilter

BLUR_P: Final = 0.5
BLUR_SIGMA: Final = (0.0, 3.0)
JPEG_P: Final = 0.5
JPEG_QUALITY: Final = (30, 100)


@dataclass(frozen=True)
class Augmentation:
    """One draw: blur sigma and JPEG quality, ``None`` where not applied."""

    blur_sigma: float | None = None
    jpeg_quality: int | None = None

    def apply(self, img: Image.Image) -> Image.Image:
        """Blur, then JPEG round trip (each only if drawn); returns RGB."""
        out = img.convert("RGB")
        if self.blur_sigma is not None and self.blur_sigma > 0:
            out = out.filter(ImageFilter.GaussianBlur(radius=self.blur_sigma))
        if self.jpeg_quality is not None:
            buf = io.BytesIO()
            out.save(buf, format="JPEG", quality=self.jpeg_quality)
            buf.seek(0)
            with Image.open(buf) as im:
                out = im.convert("RGB")
        return out

    def record(self) -> dict[str, float | int | None]:
        """For the manifest's image rows."""
        sigma = None if self.blur_sigma is None else round(self.blur_sigma, 4)
        return {"blur_sigma": sigma, "jpeg_quality": self.jpeg_quality}


def draw(rng: np.random.Generator) -> Augmentation:
    """Draw blur and JPEG independently (always four draws: stable streams)."""
    u_blur, sigma, u_jpeg = rng.random(), rng.uniform(*BLUR_SIGMA), rng.random()
    quality = int(rng.integers(JPEG_QUALITY[0], JPEG_QUALITY[1] + 1))
    return Augmentation(
        float(sigma) if u_blur < BLUR_P else None,
        quality if u_jpeg < JPEG_P else None,
    )


def settings() -> dict[str, object]:
    """The augmentation recipe, for the manifest."""
    return {
        "splits": ["train"],
        "blur": {
            "p": BLUR_P,
            "sigma_uniform": list(BLUR_SIGMA),
            "impl": "PIL GaussianBlur",
        },
        "jpeg": {"p": JPEG_P, "quality_uniform_int": list(JPEG_QUALITY)},
        "order": "blur, then JPEG round trip, then the pair's format path",
        "pairing": "one draw per (real, fake) pair, applied to both",
    }
