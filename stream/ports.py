"""Ports: what the pipeline needs from the outside, as Protocols and plain records.

`Detector` is implemented by `stream.triton_detector.TritonDetector` (Triton over
gRPC) and by test doubles; the pipeline never imports a Kafka or Triton client.
`Detection` is serving's typed result (`serving.scoring.detection`), the same from
the in-process detector and from Triton.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from serving.scoring.detection import Detection
from serving.scoring.drift import ScoreReference
from stream.events import ModelVersions

__all__ = ["Detection", "Detector", "ModelInfo"]


@dataclass(frozen=True)
class ModelInfo:
    """What the detector serves: versions and the preprocessing it was trained with.

    Attributes:
        policy: Versioned preprocessing policy id, e.g. ``clip_default@1``.
        versions: Versions copied into every verdict.
        max_batch_size: Largest batch one call may carry (0: unknown).
        score_reference: The calibration split's binned decision scores, for drift
            (None: artifacts trained before it was recorded; no drift gauge).
    """

    policy: str
    versions: ModelVersions
    max_batch_size: int = 0
    score_reference: ScoreReference | None = None


class Detector(Protocol):
    """Scores preprocessed images: ``uint8 (n, 224, 224, 3)`` → one `Detection` each."""

    async def info(self) -> ModelInfo:
        """The served model's versions and policy.

        Raises:
            TransientError: the detector cannot be reached.
        """
        ...

    async def detect(
        self,
        images: npt.NDArray[np.uint8],
        captions: Sequence[str | None] | None = None,
    ) -> Sequence[Detection]:
        """Score a batch in one call.

        Args:
            images: (n, 224, 224, 3) uint8 preprocessed images.
            captions: One caption per image (None: none), for a served artifact
                whose text source is ``caption``; the pipeline passes them only
                then (`ModelVersions.text_source`).

        Raises:
            TransientError: unavailable now (retry later, never skip).
            PoisonMessageError: the detector rejected the input (stage ``infer``).
        """
        ...

    async def ready(self) -> bool:
        """Whether a call would be served now (False when unreachable)."""
        ...

    async def close(self) -> None:
        """Release connections."""
        ...
