"""Domain: the encoder's feature vector and the view each head takes of it.

An encoder returns, per image, the projected embedding ``(embed_dim,)`` and the CLS
token of every transformer block ``(n_blocks, block_dim)``. Heads, the feature store
and Triton carry them as one flat row laid out by `FeatureLayout`::

    [ embedding (embed_dim) | block 0 CLS (block_dim) | ... | block L-1 CLS ]

A `FeatureView` (recorded in each head's manifest parameters) selects the part a head
was trained on and normalises it the same way in training and serving:

- ``embeds``: the projected embedding, raw or L2-normalised;
- ``blocks``: the CLS tokens of the listed blocks, each block L2-normalised (RINE and
  our measurements: per-block normalisation keeps one block's scale from dominating),
  concatenated in block order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError
from serving.scoring.knn import l2_normalize

FloatArray = npt.NDArray[np.float32]
Source = Literal["embeds", "blocks"]
Norm = Literal["none", "l2"]
SOURCES: Final[tuple[Source, ...]] = ("embeds", "blocks")
NORMS: Final[tuple[Norm, ...]] = ("none", "l2")


class ViewError(InvalidInputError):
    """A view or layout that does not fit the features it is applied to."""


@dataclass(frozen=True)
class FeatureLayout:
    """Widths of the flat feature row.

    Attributes:
        embed_dim: Projected embedding width (512 for ViT-B/16, 768 for L/14).
        n_blocks: Transformer blocks with a CLS token in the row (12 / 24).
        block_dim: Width of a CLS token (768 / 1024).
    """

    embed_dim: int
    n_blocks: int
    block_dim: int

    @property
    def width(self) -> int:
        """Length of the flat row."""
        return self.embed_dim + self.n_blocks * self.block_dim

    def flatten(self, embeds: FloatArray, blocks: FloatArray) -> FloatArray:
        """Build flat rows from (n, embed_dim) embeddings and (n, L, D) CLS tokens.

        Raises:
            ViewError: The shapes do not match this layout.
        """
        n = embeds.shape[0]
        if embeds.shape != (n, self.embed_dim) or blocks.shape != (
            n,
            self.n_blocks,
            self.block_dim,
        ):
            raise ViewError(
                f"embeds {embeds.shape} / blocks {blocks.shape} do not fit {self}"
            )
        flat: FloatArray = np.concatenate(
            [embeds, blocks.reshape(n, -1)], axis=1, dtype=np.float32
        )
        return flat

    def embeds(self, x: FloatArray) -> FloatArray:
        """The (n, embed_dim) embeddings of flat rows."""
        self._check(x)
        return x[:, : self.embed_dim]

    def blocks(self, x: FloatArray) -> FloatArray:
        """The (n, n_blocks, block_dim) CLS tokens of flat rows."""
        self._check(x)
        return x[:, self.embed_dim :].reshape(-1, self.n_blocks, self.block_dim)

    def _check(self, x: FloatArray) -> None:
        if x.ndim != 2 or x.shape[1] != self.width:
            raise ViewError(f"features {x.shape}, expected (n, {self.width})")

    def to_dict(self) -> dict[str, int]:
        """JSON form (manifest)."""
        return {
            "embed_dim": self.embed_dim,
            "n_blocks": self.n_blocks,
            "block_dim": self.block_dim,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureLayout:
        """Inverse of `to_dict`."""
        return cls(int(doc["embed_dim"]), int(doc["n_blocks"]), int(doc["block_dim"]))


@dataclass(frozen=True)
class FeatureView:
    """The part of the flat feature row a head consumes, and its normalisation.

    Attributes:
        layout: Layout of the flat rows.
        source: ``embeds`` or ``blocks``.
        blocks: 0-based block indices (``blocks`` only; empty means all).
        norm: ``l2`` (per block for ``blocks``) or ``none``.
    """

    layout: FeatureLayout
    source: Source = "blocks"
    blocks: tuple[int, ...] = ()
    norm: Norm = "l2"

    def __post_init__(self) -> None:
        if self.source not in SOURCES or self.norm not in NORMS:
            raise ViewError(f"bad view {self.source!r}/{self.norm!r}")
        bad = [b for b in self.blocks if not 0 <= b < self.layout.n_blocks]
        if bad or (self.source == "blocks" and self.layout.n_blocks == 0):
            raise ViewError(f"blocks {bad or self.blocks} not in {self.layout}")

    @property
    def block_ids(self) -> tuple[int, ...]:
        """The blocks used, in order (all when none were listed)."""
        return self.blocks or tuple(range(self.layout.n_blocks))

    @property
    def dim(self) -> int:
        """Width of the view's output."""
        if self.source == "embeds":
            return self.layout.embed_dim
        return len(self.block_ids) * self.layout.block_dim

    def apply(self, x: FloatArray) -> FloatArray:
        """Map (n, layout.width) flat rows to (n, dim) float32 head inputs."""
        x = np.asarray(x, dtype=np.float32)
        if self.source == "embeds":
            emb = self.layout.embeds(x)
            return l2_normalize(emb) if self.norm == "l2" else emb.copy()
        cls = self.layout.blocks(x)[:, list(self.block_ids), :]
        n, n_sel, width = cls.shape
        if self.norm == "l2":
            cls = l2_normalize(cls.reshape(n * n_sel, width)).reshape(n, n_sel, width)
        return np.ascontiguousarray(cls.reshape(n, n_sel * width), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (head parameters in the manifest)."""
        return {
            "layout": self.layout.to_dict(),
            "source": self.source,
            "blocks": list(self.block_ids) if self.source == "blocks" else [],
            "norm": self.norm,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureView:
        """Inverse of `to_dict`.

        Raises:
            ViewError: Missing or invalid fields.
        """
        try:
            return cls(
                layout=FeatureLayout.from_dict(doc["layout"]),
                source=doc["source"],
                blocks=tuple(int(b) for b in doc.get("blocks", ())),
                norm=doc["norm"],
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ViewError(f"bad feature view {doc!r}: {exc}") from exc
