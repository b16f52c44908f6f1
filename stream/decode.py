"""Domain: bytes → RGB PIL image, with limits against hostile input.

Checks run in this order, each failure a `PoisonMessageError` (stage ``decode``):
``empty`` (0 bytes), ``too_large`` (over ``max_bytes``), ``not_an_image``
(unidentified), ``format_not_allowed`` (outside the allowlist),
``decompression_bomb`` (width × height over ``max_pixels``, checked from the header
before any pixel is decoded; Pillow's own bomb guard is mapped to the same class),
``truncated`` / ``corrupt`` (the pixel data does not decode). A PNG text chunk that
inflates past Pillow's text limits (a metadata bomb) is ``too_large``. The result is
the first frame, rotated by its EXIF orientation, in RGB: an animated GIF or WebP is
scored on its first frame only.

The default allowlist is JPEG, PNG, WebP and GIF; other formats Pillow can read
(``TIFF``, ``BMP``, ``ICO``, ``JPEG2000``, ``AVIF``, ...) are opt-in through
``SYNTHGUARD_DECODE__FORMATS``.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from stream.errors import PoisonMessageError

_STAGE = "decode"
# what Pillow raises on broken files besides OSError (plugin-dependent)
_BROKEN = (OSError, SyntaxError, ValueError, EOFError, struct.error)
# Pillow's PNG text-chunk guards name these limits in their ValueError
_TEXT_LIMITS = ("MAX_TEXT_CHUNK", "MAX_TEXT_MEMORY")
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF")
MAX_IMAGE_BYTES = 20 * 1024 * 1024  # the fetch limit too


@dataclass(frozen=True)
class DecodeLimits:
    """Decoder limits (see `stream.settings.DecodeSettings`)."""

    max_bytes: int = MAX_IMAGE_BYTES
    max_pixels: int = 40_000_000
    formats: frozenset[str] = frozenset(DEFAULT_FORMATS)


def _poison(message: str, error_class: str) -> PoisonMessageError:
    return PoisonMessageError(message, error_class=error_class, stage=_STAGE)


def _open(data: bytes) -> Image.Image:
    try:
        return Image.open(io.BytesIO(data))
    except UnidentifiedImageError as exc:
        raise _poison("not a recognised image format", "not_an_image") from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _poison(str(exc), "decompression_bomb") from exc
    except _BROKEN as exc:
        if _is_text_bomb(exc):
            raise _poison(f"metadata too large: {exc}", "too_large") from exc
        raise _poison(f"unreadable image header: {exc}", "corrupt") from exc


def _is_text_bomb(exc: Exception) -> bool:
    return isinstance(exc, ValueError) and any(k in str(exc) for k in _TEXT_LIMITS)


def decode_image(data: bytes, limits: DecodeLimits) -> Image.Image:
    """Decode image bytes under `limits`.

    Args:
        data: The encoded image.
        limits: Byte, pixel and format limits.

    Returns:
        The decoded first frame, EXIF-oriented, in RGB mode.

    Raises:
        PoisonMessageError: with the error class of the first failed check.
    """
    if not data:
        raise _poison("zero bytes", "empty")
    if len(data) > limits.max_bytes:
        raise _poison(f"{len(data)} bytes over {limits.max_bytes}", "too_large")
    img = _open(data)
    if img.format not in limits.formats:
        raise _poison(f"format {img.format} not allowed", "format_not_allowed")
    width, height = img.size
    if width * height > limits.max_pixels:
        raise _poison(
            f"{width}x{height} over the {limits.max_pixels} pixel limit",
            "decompression_bomb",
        )
    try:
        img.seek(0)
        img.load()
        oriented = ImageOps.exif_transpose(img)
        return oriented if oriented.mode == "RGB" else oriented.convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _poison(str(exc), "decompression_bomb") from exc
    except _BROKEN as exc:
        if _is_text_bomb(exc):  # a text chunk after the image data
            raise _poison(f"metadata too large: {exc}", "too_large") from exc
        error_class = "truncated" if "truncated" in str(exc) else "corrupt"
        raise _poison(f"pixel data does not decode: {exc}", error_class) from exc
