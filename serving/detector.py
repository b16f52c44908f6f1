"""Application: score images end to end in-process (encoder + heads + calibration).

This is the reference path the Triton deployment must reproduce; `synthguard score`
uses it directly. With a text source in the manifest (`serving.text_source`) the
detector also encodes each image's caption (or the fixed prompt) with the CLIP text
tower the artifacts were trained with, and the MLP reads image ⊕ text features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from serving.artifacts import (
    Artifacts,
    check_text_tower,
    load_artifacts,
    manifest_summary,
    read_manifest,
)
from serving.encoders.base import ImageEncoder, TextEncoder
from serving.errors import InvalidInputError
from serving.preprocessing import get_policy, policy_id
from serving.references import knn_head
from serving.scoring.calibration import calibrate, decide
from serving.scoring.detection import N_EXEMPLARS, Detection
from serving.scoring.novelty import apply_reasons, novelty_reasons
from serving.text_source import encode_texts


@dataclass
class Detector:
    """An encoder plus verified artifacts, checked to belong together.

    Attributes:
        text_encoder: The CLIP text tower, when the artifacts have a text source.
    """

    encoder: ImageEncoder
    artifacts: Artifacts
    policy: str
    text_encoder: TextEncoder | None = None

    @classmethod
    def open(
        cls,
        encoder: ImageEncoder,
        artifact_dir: Path,
        text_encoder: TextEncoder | None = None,
    ) -> Detector:
        """Load artifacts and check they were trained on this encoder (and text tower).

        Args:
            encoder: The image encoder.
            artifact_dir: Trained artifacts.
            text_encoder: The CLIP text tower; needed when the manifest has a text
                source, ignored otherwise.

        Raises:
            ArtifactMismatchError: hashes, encoder, text tower or policy differ.
            MissingWeightsError: no artifacts.
        """
        policy = read_manifest(artifact_dir).encoder.policy.split("@", 1)[0]
        arts = load_artifacts(artifact_dir, encoder.info, policy_id(policy))
        if not arts.manifest.encoder.text.enabled:
            return cls(encoder, arts, policy)
        check_text_tower(arts.manifest, text_encoder.info if text_encoder else None)
        return cls(encoder, arts, policy, text_encoder)

    def rows(
        self,
        pixels: npt.NDArray[np.uint8],
        captions: Sequence[str | None] | None = None,
    ) -> npt.NDArray[np.float32]:
        """The flat feature rows the heads read (with the text part, if any).

        Args:
            pixels: (n, 224, 224, 3) uint8 preprocessed images.
            captions: One caption per image (None: no captions); read only by a
                ``caption`` text source.
        """
        rec = self.artifacts.manifest.encoder
        enc = self.encoder.encode(pixels)
        if self.text_encoder is None:
            return enc.flat(rec.layout)
        texts = list(captions) if captions is not None else [None] * len(pixels)
        text = encode_texts(self.text_encoder, rec.text, texts)
        return rec.layout.flatten(enc.embeds, enc.blocks, text)

    def score_pixels(
        self,
        pixels: np.ndarray[Any, np.dtype[np.uint8]],
        captions: Sequence[str | None] | None = None,
    ) -> list[Detection]:
        """Score preprocessed (n, 224, 224, 3) uint8 images; one `Detection` each.

        Args:
            pixels: The images.
            captions: One caption per image, for a ``caption`` text source.
        """
        man = self.artifacts.manifest
        x = self.rows(pixels, captions)
        knn = knn_head(self.artifacts.heads)
        found = knn.answer(x) if knn is not None else None  # one bank search
        per_head = {
            n: found.scores if found is not None and h is knn else h.score(x)
            for n, h in self.artifacts.heads.items()
        }
        decision = self.artifacts.decision
        cal = decision.calibration
        probs = calibrate(cal, decision.score(per_head))
        evidence = found.neighbours if found is not None else [[] for _ in x]
        reasons = (
            novelty_reasons(self.artifacts.novelty, found.similarity)
            if found is not None
            else [() for _ in range(len(x))]
        )
        labels = apply_reasons(decide(cal, probs), reasons)
        versions = manifest_summary(man)
        return [
            Detection(
                label=str(labels[i]),
                probability=float(probs[i]),
                threshold=cal.threshold,
                uncertain_low=cal.uncertain_low,
                head_scores={n: float(s[i]) for n, s in per_head.items()},
                nearest_exemplars=tuple(evidence[i][:N_EXEMPLARS]),
                versions=versions,
                reasons=reasons[i],
            )
            for i in range(len(x))
        ]

    def score_file(self, path: Path, caption: str | None = None) -> dict[str, Any]:
        """Score one image file; undecodable input gives an error record, not a crash."""
        try:
            with Image.open(path) as img:
                img.load()
                pixels = get_policy(self.policy)(img)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            err = InvalidInputError(f"cannot decode {path}: {exc}")
            return {"path": str(path), "error": type(err).__name__, "message": str(err)}
        detection = self.score_pixels(pixels[None], [caption])[0]
        return {"path": str(path), **detection.to_dict()}
