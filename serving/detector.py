"""Application: score images end to end in-process (encoder + heads + calibration).

This is the reference path the Triton deployment must reproduce; `synthguard score`
uses it directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from serving.artifacts import (
    Artifacts,
    load_artifacts,
    manifest_summary,
    read_manifest,
)
from serving.encoders.base import ImageEncoder
from serving.errors import InvalidInputError
from serving.preprocessing import get_policy, policy_id
from serving.references import knn_head
from serving.scoring.calibration import calibrate, decide
from serving.scoring.detection import N_EXEMPLARS, Detection
from serving.scoring.novelty import apply_reasons, novelty_reasons


@dataclass
class Detector:
    """An encoder plus verified artifacts, checked to belong together."""

    encoder: ImageEncoder
    artifacts: Artifacts
    policy: str

    @classmethod
    def open(cls, encoder: ImageEncoder, artifact_dir: Path) -> Detector:
        """Load artifacts and check they were trained on this encoder.

        Raises:
            ArtifactMismatchError: hashes, encoder or policy differ.
            MissingWeightsError: no artifacts.
        """
        policy = read_manifest(artifact_dir).encoder.policy.split("@", 1)[0]
        arts = load_artifacts(artifact_dir, encoder.info, policy_id(policy))
        return cls(encoder, arts, policy)

    def score_pixels(
        self, pixels: np.ndarray[Any, np.dtype[np.uint8]]
    ) -> list[Detection]:
        """Score preprocessed (n, 224, 224, 3) uint8 images; one `Detection` each."""
        man = self.artifacts.manifest
        x = self.encoder.encode(pixels).flat(man.encoder.layout)
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

    def score_file(self, path: Path) -> dict[str, Any]:
        """Score one image file; undecodable input gives an error record, not a crash."""
        try:
            with Image.open(path) as img:
                img.load()
                pixels = get_policy(self.policy)(img)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as exc:
            err = InvalidInputError(f"cannot decode {path}: {exc}")
            return {"path": str(path), "error": type(err).__name__, "message": str(err)}
        return {"path": str(path), **self.score_pixels(pixels[None])[0].to_dict()}
