"""Domain: the format paths of the benchmark (container, quality, size) and its writer.

A *format path* is what happens to an image after the generator: the side it is
produced at and the container it is stored in (PNG, JPEG at one quality, lossy WebP
at one quality). Every (real, fake) pair draws one path and both images take it, so
that neither the container, the quality nor the size can tell a class apart, while
the benchmark as a whole mixes them. A large share is native 224 x 224 PNG: the size
the detector's preprocessing uses unchanged (short side 224, centre crop 224), so
generator traces reach it without resampling. Files carry no metadata and are named
by their content hash.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from serving.benchdata.jpeg import NAME_HEX_CHARS, encode_jpeg
from serving.errors import DatasetError, InvalidInputError

NATIVE_SIDE: Final = 224
SIDES: Final = (224, 256, 320, 384, 448, 512)
JPEG_QUALITIES: Final = (75, 80, 85, 90, 95)
WEBP_QUALITIES: Final = (80, 90)
PNG_COMPRESS_LEVEL: Final = 6
WEBP_METHOD: Final = 4
EXTENSIONS: Final = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}
# (container, probability, sides, qualities); PNG 224 first: >= 45 % of all pairs.
MIX: Final[tuple[tuple[str, float, tuple[int, ...], tuple[int, ...]], ...]] = (
    ("png", 0.45, (NATIVE_SIDE,), ()),
    ("png", 0.10, SIDES[1:], ()),
    ("jpeg", 0.30, SIDES, JPEG_QUALITIES),
    ("webp", 0.15, SIDES, WEBP_QUALITIES),
)


@dataclass(frozen=True)
class FormatPath:
    """Side and container shared by both images of a pair.

    Attributes:
        container: ``png``, ``jpeg`` or ``webp``.
        side: width and height of the stored image, in pixels.
        quality: JPEG / WebP quality; ``None`` for PNG.
    """

    container: str
    side: int
    quality: int | None = None

    def __post_init__(self) -> None:
        if self.container not in EXTENSIONS:
            raise InvalidInputError(f"container {self.container!r} not in {EXTENSIONS}")
        if (self.quality is None) != (self.container == "png"):
            raise InvalidInputError(f"{self.container}: quality {self.quality}")

    @property
    def label(self) -> str:
        """Short name, e.g. ``png_224`` or ``jpeg_q85_320``."""
        q = "" if self.quality is None else f"_q{self.quality}"
        return f"{self.container}{q}_{self.side}"


def draw_path(rng: np.random.Generator, native_only: bool = False) -> FormatPath:
    """Draw a format path from ``MIX`` (``native_only``: always PNG 224)."""
    if native_only:
        return FormatPath("png", NATIVE_SIDE)
    probs = np.array([m[1] for m in MIX])
    container, _, sides, qualities = MIX[
        int(rng.choice(len(MIX), p=probs / probs.sum()))
    ]
    side = int(sides[int(rng.integers(len(sides)))])
    quality = int(qualities[int(rng.integers(len(qualities)))]) if qualities else None
    return FormatPath(container, side, quality)


def encode(img: Image.Image, path: FormatPath) -> bytes:
    """Encode an RGB image of side ``path.side`` along ``path``, without metadata.

    Raises:
        InvalidInputError: if the image is not RGB or not ``side`` x ``side``.
    """
    if img.mode != "RGB" or img.size != (path.side, path.side):
        raise InvalidInputError(f"{path.label}: got {img.mode} {img.size}")
    if path.container == "jpeg" and path.quality is not None:
        return encode_jpeg(img, path.quality)
    clean = Image.fromarray(np.array(img, dtype=np.uint8))
    buf = io.BytesIO()
    if path.container == "png":
        clean.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    else:
        clean.save(buf, format="WEBP", quality=path.quality, method=WEBP_METHOD)
    return buf.getvalue()


def write_image(img: Image.Image, directory: Path, path: FormatPath) -> Path:
    """Encode ``img`` along ``path`` and write ``<directory>/<sha256 prefix>.<ext>``.

    Raises:
        DatasetError: if that file already exists (a duplicate would shrink a class).
    """
    data = encode(img, path)
    name = (
        hashlib.sha256(data).hexdigest()[:NAME_HEX_CHARS] + EXTENSIONS[path.container]
    )
    target = directory / name
    if target.exists():
        raise DatasetError(f"duplicate image content: {target} already exists")
    directory.mkdir(parents=True, exist_ok=True)
    target.write_bytes(data)
    return target


def settings() -> dict[str, object]:
    """The format mix and encoder settings, for the benchmark manifest."""
    return {
        "mix": [
            {"container": c, "p": p, "sides": list(s), "qualities": list(q)}
            for c, p, s, q in MIX
        ],
        "png": {"compress_level": PNG_COMPRESS_LEVEL},
        "jpeg": {"subsampling": "4:2:0", "optimize": False, "progressive": False},
        "webp": {"lossy": True, "method": WEBP_METHOD},
        "metadata": "none (no EXIF, ICC or comments)",
        "pairing": "both images of a pair share one path (container, quality, side)",
    }
