"""Domain: the encoder's feature vector and the view each head takes of it.

An encoder returns, per image, the projected embedding ``(embed_dim,)`` and the CLS
token of every transformer block ``(n_blocks, block_dim)``. Heads, the feature store
and Triton carry them as one flat row laid out by `FeatureLayout`::

    [ embedding (embed_dim) | block 0 CLS (block_dim) | ... | block L-1 CLS ]

When the artifact has a text source (`serving.text_source`), the row ends with the
text embedding of the image's text (``text_dim`` wide): ``[ ... | text ]``. Only a
view with ``text=True`` (the MLP's, Santosh et al.) reads it; the other views accept
rows with or without it, so image-only heads never need the text.

A `FeatureView` (recorded in each head's manifest parameters) selects the part a head
was trained on and normalises it the same way in training and serving:

- ``embeds``: the projected embedding, raw or L2-normalised;
- ``blocks``: the CLS tokens of the listed blocks, each block L2-normalised (RINE and
  our measurements: per-block normalisation keeps one block's scale from dominating),
  concatenated in block order;
- ``text`` (optional, on top of either): the text embedding appended, L2-normalised
  when ``norm`` is ``l2``.
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
        text_dim: Width of the trailing text embedding (0: no text part).
    """

    embed_dim: int
    n_blocks: int
    block_dim: int
    text_dim: int = 0

    @property
    def image_width(self) -> int:
        """Length of the image part of the row (embedding and CLS tokens)."""
        return self.embed_dim + self.n_blocks * self.block_dim

    @property
    def width(self) -> int:
        """Length of the full flat row (image part, then text part if any)."""
        return self.image_width + self.text_dim

    @property
    def image_layout(self) -> FeatureLayout:
        """This layout without the text part (what an image encoder produces)."""
        return FeatureLayout(self.embed_dim, self.n_blocks, self.block_dim)

    def flatten(
        self, embeds: FloatArray, blocks: FloatArray, text: FloatArray | None = None
    ) -> FloatArray:
        """Build flat rows from embeddings, CLS tokens and optionally text embeddings.

        Args:
            embeds: (n, embed_dim) projected image embeddings.
            blocks: (n, n_blocks, block_dim) CLS tokens.
            text: (n, text_dim) text embeddings; None gives image-only rows
                (``image_width`` wide).

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
        parts = [embeds, blocks.reshape(n, -1)]
        if text is not None:
            if self.text_dim == 0 or text.shape != (n, self.text_dim):
                raise ViewError(f"text {text.shape} does not fit {self}")
            parts.append(text)
        flat: FloatArray = np.concatenate(parts, axis=1, dtype=np.float32)
        return flat

    def embeds(self, x: FloatArray) -> FloatArray:
        """The (n, embed_dim) embeddings of flat rows (with or without text)."""
        self._check(x, text_optional=True)
        return x[:, : self.embed_dim]

    def blocks(self, x: FloatArray) -> FloatArray:
        """The (n, n_blocks, block_dim) CLS tokens of flat rows (with or without text)."""
        self._check(x, text_optional=True)
        cls = x[:, self.embed_dim : self.image_width]
        return cls.reshape(-1, self.n_blocks, self.block_dim)

    def text(self, x: FloatArray) -> FloatArray:
        """The (n, text_dim) text embeddings of full flat rows."""
        self._check(x, text_optional=False)
        return x[:, self.image_width :]

    def _check(self, x: FloatArray, text_optional: bool) -> None:
        widths = {self.width, self.image_width} if text_optional else {self.width}
        if x.ndim != 2 or x.shape[1] not in widths:
            raise ViewError(f"features {x.shape}, expected (n, {self.width})")

    def to_dict(self) -> dict[str, int]:
        """JSON form (manifest); ``text_dim`` only when there is a text part."""
        doc = {
            "embed_dim": self.embed_dim,
            "n_blocks": self.n_blocks,
            "block_dim": self.block_dim,
        }
        return {**doc, "text_dim": self.text_dim} if self.text_dim else doc

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> FeatureLayout:
        """Inverse of `to_dict`."""
        return cls(
            int(doc["embed_dim"]),
            int(doc["n_blocks"]),
            int(doc["block_dim"]),
            int(doc.get("text_dim", 0)),
        )


@dataclass(frozen=True)
class FeatureView:
    """The part of the flat feature row a head consumes, and its normalisation.

    Attributes:
        layout: Layout of the flat rows.
        source: ``embeds`` or ``blocks``.
        blocks: 0-based block indices (``blocks`` only; empty means all).
        norm: ``l2`` (per block for ``blocks``, and of the text part) or ``none``.
        text: Append the row's text embedding (the layout must have a text part).
    """

    layout: FeatureLayout
    source: Source = "blocks"
    blocks: tuple[int, ...] = ()
    norm: Norm = "l2"
    text: bool = False

    def __post_init__(self) -> None:
        if self.source not in SOURCES or self.norm not in NORMS:
            raise ViewError(f"bad view {self.source!r}/{self.norm!r}")
        bad = [b for b in self.blocks if not 0 <= b < self.layout.n_blocks]
        if bad or (self.source == "blocks" and self.layout.n_blocks == 0):
            raise ViewError(f"blocks {bad or self.blocks} not in {self.layout}")
        if self.text and self.layout.text_dim == 0:
            raise ViewError(f"a text view needs a layout with a text part: {self}")

    @property
    def block_ids(self) -> tuple[int, ...]:
        """The blocks used, in order (all when none were listed)."""
        return self.blocks or tuple(range(self.layout.n_blocks))

    @property
    def dim(self) -> int:
        """Width of the view's output."""
        text = self.layout.text_dim if self.text else 0
        if self.source == "embeds":
            return self.layout.embed_dim + text
        return len(self.block_ids) * self.layout.block_dim + text

    def apply(self, x: FloatArray) -> FloatArray:
        """Map (n, layout.width) flat rows to (n, dim) float32 head inputs.

        A view without ``text`` also takes image-only rows (``layout.image_width``).
        """
        x = np.asarray(x, dtype=np.float32)
        image = self._image(x)
        if not self.text:
            return image
        text = self.layout.text(x)
        text = l2_normalize(text) if self.norm == "l2" else text
        return np.concatenate([image, text], axis=1, dtype=np.float32)

    def _image(self, x: FloatArray) -> FloatArray:
        if self.source == "embeds":
            emb = self.layout.embeds(x)
            return l2_normalize(emb) if self.norm == "l2" else emb.copy()
        cls = self.layout.blocks(x)[:, list(self.block_ids), :]
        n, n_sel, width = cls.shape
        if self.norm == "l2":
            cls = l2_normalize(cls.reshape(n * n_sel, width)).reshape(n, n_sel, width)
        return np.ascontiguousarray(cls.reshape(n, n_sel * width), dtype=np.float32)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (head parameters in the manifest); ``text`` only when set."""
        doc = {
            "layout": self.layout.to_dict(),
            "source": self.source,
            "blocks": list(self.block_ids) if self.source == "blocks" else [],
            "norm": self.norm,
        }
        return {**doc, "text": True} if self.text else doc

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
                text=bool(doc.get("text", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ViewError(f"bad feature view {doc!r}: {exc}") from exc
