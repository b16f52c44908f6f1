"""Domain: the one JPEG encoder of the benchmark, shared by every class and family.

Real and fake images go through the same encoder call (same quality, chroma
subsampling, quantisation tables, baseline, no EXIF/ICC, no Huffman optimisation), so
that the container can never tell a class apart. File names are the content hash:
neutral, label-free and stable across builds.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from serving.errors import DatasetError, InvalidInputError

DEFAULT_QUALITY: Final = 90
SUBSAMPLING: Final = "4:2:0"
NAME_HEX_CHARS: Final = 16

QTables = dict[int, tuple[int, ...]]


def encode_jpeg(img: Image.Image, quality: int = DEFAULT_QUALITY) -> bytes:
    """Encode an RGB image with the benchmark's single JPEG setting.

    The pixels are copied into a fresh image first, so no metadata (EXIF, ICC
    profile, comments, DPI) of the source can reach the file.

    Args:
        img: the image to encode; must be RGB.
        quality: libjpeg quality factor (1-95), identical for every image of a build.

    Returns:
        The baseline JPEG bytes.

    Raises:
        InvalidInputError: if the image is not RGB or the quality is out of range.
    """
    if img.mode != "RGB":
        raise InvalidInputError(f"JPEG encoder takes RGB images, got mode {img.mode}")
    if not 1 <= quality <= 95:
        raise InvalidInputError(f"JPEG quality must be in [1, 95], got {quality}")
    clean = Image.fromarray(np.array(img, dtype=np.uint8))
    buf = io.BytesIO()
    settings = encoder_settings(quality)
    clean.save(
        buf,
        format="JPEG",
        quality=quality,
        subsampling=SUBSAMPLING,
        optimize=settings["optimize"],
        progressive=settings["progressive"],
    )
    return buf.getvalue()


def encoder_settings(quality: int = DEFAULT_QUALITY) -> dict[str, object]:
    """The encoder setting shared by every file, for the benchmark manifest."""
    return {
        "quality": quality,
        "subsampling": SUBSAMPLING,
        "optimize": False,
        "progressive": False,
        "metadata": "none (no EXIF, ICC or comments)",
    }


def write_jpeg(
    img: Image.Image, directory: Path, quality: int = DEFAULT_QUALITY
) -> Path:
    """Encode ``img`` and write it as ``<directory>/<sha256 prefix>.jpg``.

    Returns:
        The path written.

    Raises:
        DatasetError: if a different file already has that name, or the same image
            was already written there (a duplicate would silently shrink a class).
    """
    data = encode_jpeg(img, quality)
    path = directory / f"{hashlib.sha256(data).hexdigest()[:NAME_HEX_CHARS]}.jpg"
    if path.exists():
        raise DatasetError(f"duplicate image content: {path} already exists")
    directory.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_qtables(path: Path) -> QTables:
    """Return the quantisation tables of a JPEG file (table id -> 64 values)."""
    with Image.open(path) as im:
        tables = getattr(im, "quantization", None)
        if not tables:
            raise InvalidInputError(
                f"{path} is not a JPEG file with quantisation tables"
            )
        return {int(k): tuple(int(v) for v in t) for k, t in tables.items()}
