"""Domain: one image's detection, as both the in-process and the Triton path return it.

`serving.detector.Detector.score_pixels` and
`serving.triton.client.TritonDetectorClient.detect` return these; the stream worker
turns each into a verdict. Plain values only (no arrays), frozen.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

N_EXEMPLARS: Final = 5  # nearest exemplars reported per image (kNN evidence)


@dataclass(frozen=True)
class Detection:
    """One image's result from the detector.

    Attributes:
        label: ``ai_generated``, ``real`` or ``uncertain``.
        probability: Calibrated probability of AI-generated (the decision's).
        threshold: Probability threshold of ``ai_generated``.
        uncertain_low: Lower edge of the ``uncertain`` band.
        head_scores: Raw score per head instance, higher = more likely fake.
        nearest_exemplars: kNN evidence, ``"<real|fake> <cosine> <id>"``, nearest
            first, at most `N_EXEMPLARS`.
        versions: Model versions (`serving.artifacts.manifest_summary`).
        reasons: Why the label is ``uncertain`` beyond the probability band, e.g.
            ``novel`` (`serving.scoring.novelty`); empty otherwise.
        bank_version: The feedback bank version the kNN head scored with
            (`serving.feedback_bank`); None with the training banks only.
    """

    label: str
    probability: float
    threshold: float
    uncertain_low: float
    head_scores: Mapping[str, float]
    nearest_exemplars: tuple[str, ...]
    versions: Mapping[str, Any] = field(default_factory=dict)
    reasons: tuple[str, ...] = ()
    bank_version: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (``synthguard score`` output)."""
        return {
            "label": self.label,
            "probability": self.probability,
            "threshold": self.threshold,
            "uncertain_low": self.uncertain_low,
            "head_scores": dict(self.head_scores),
            "nearest_exemplars": list(self.nearest_exemplars),
            "versions": dict(self.versions),
            "reasons": list(self.reasons),
            **({"bank_version": self.bank_version} if self.bank_version else {}),
        }
