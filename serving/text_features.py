"""Adapter: text embeddings for the image ⊕ text branch, for training and scoring.

Training images carry their caption, if any, in a sidecar file: ``cat.png`` →
``cat.txt`` (UTF-8) next to it. Our offline benchmark has none, so a ``caption``
source trains on the empty string for every image (recorded in the manifest as
``training.text.captioned``); nothing is invented. `TextBranch.attach` appends the
text embedding to each flat feature row (`serving.scoring.views`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from serving.encoders.base import TextEncoder
from serving.errors import InvalidInputError
from serving.features import FeatureSet
from serving.scoring.views import FeatureLayout
from serving.text_source import TextSource, encode_texts

logger = logging.getLogger(__name__)

CAPTION_SUFFIX = ".txt"


def sidecar_caption(image: Path) -> str | None:
    """The caption stored next to an image (``<stem>.txt``), or None."""
    path = image.with_suffix(CAPTION_SUFFIX)
    return path.read_text(encoding="utf-8").strip() if path.is_file() else None


@dataclass(frozen=True)
class TextBranch:
    """A text source and the text tower that encodes it.

    Attributes:
        source: The text source (``caption`` or ``prompt:...``).
        encoder: The CLIP text tower (`serving.encoders.factory.load_text_encoder`).
    """

    source: TextSource
    encoder: TextEncoder

    def __post_init__(self) -> None:
        if not self.source.enabled:
            raise InvalidInputError("a text branch needs a text source other than none")

    def attach(self, fs: FeatureSet, root: Path) -> FeatureSet:
        """`fs` with each row's text embedding appended (captions from sidecars).

        Args:
            fs: Image-only flat rows of the images under `root`.
            root: The dataset root their paths are relative to.
        """
        captions = [sidecar_caption(root / p) for p in fs.paths]
        n_captioned = sum(c is not None for c in captions)
        if self.source.kind == "caption" and n_captioned < len(captions):
            logger.warning(
                "%d of %d images under %s have no caption (%s); they train on the "
                "empty string",
                len(captions) - n_captioned,
                len(captions),
                root,
                f"<image>{CAPTION_SUFFIX}",
            )
        text = encode_texts(self.encoder, self.source, captions)
        image = FeatureLayout.from_dict(fs.meta.layout)
        layout = replace(image, text_dim=self.encoder.info.text_dim)
        meta = replace(fs.meta, dim=layout.width, layout=layout.to_dict())
        x = layout.flatten(image.embeds(fs.x), image.blocks(fs.x), text)
        return replace(fs, x=x, meta=meta)

    def provenance(
        self, roots: Sequence[Path], fs: Sequence[FeatureSet]
    ) -> dict[str, Any]:
        """What the manifest's ``training.text`` records: source, tower, captions."""
        captioned = sum(
            sidecar_caption(root / p) is not None
            for root, part in zip(roots, fs, strict=True)
            for p in part.paths
        )
        return {
            "source": str(self.source),
            "tower": self.encoder.info.encoder_id,
            "images": sum(len(part.paths) for part in fs),
            "captioned": captioned,
        }
