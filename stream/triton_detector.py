"""Adapter: the `stream.ports.Detector` port on Triton (`TritonDetectorClient`).

`TritonRowEncoder` is the feedback learner's encoder (the encoder model alone).

Maps `serving` errors onto the stream's: ``InferenceUnavailableError`` →
`TransientError`, ``InvalidInputError`` → `PoisonMessageError` (stage ``infer``).
The gRPC channel is created lazily, inside the running event loop.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.errors import InferenceUnavailableError, InvalidInputError
from serving.scoring.drift import ScoreReference
from serving.scoring.views import FeatureLayout, FeatureView
from serving.triton import names as triton_names
from serving.triton.client import TritonDetectorClient
from stream.errors import PoisonMessageError, TransientError
from stream.events import ModelVersions
from stream.ports import Detection, ModelInfo
from stream.settings import TritonSettings


def model_versions(summary: dict[str, Any]) -> ModelVersions:
    """`ModelVersions` from the manifest summary the exporter puts in the config.

    The artifact manifest has no separate calibration version: heads and their
    calibration are written (and re-written by ``synthguard calibrate``) together,
    so the release timestamp identifies both.
    """
    release = str(summary.get("created_utc", "unknown"))
    heads = summary.get("heads") or {}
    decision = str(summary.get("decision_head", "unknown"))
    return ModelVersions(
        encoder=str(summary.get("encoder", "unknown")),
        policy=str(summary.get("policy", "unknown")),
        heads=",".join(f"{n}:{k}" for n, k in sorted(heads.items())),
        calibration=f"{decision}@{release}",
        artifacts=release,
        synthguard=str(summary.get("synthguard_version", "unknown")),
        text_source=summary.get("text_source"),  # absent: image-only artifacts
    )


class TritonDetector:
    """`Detector` backed by the ``synthguard_detector`` Triton pipeline.

    Args:
        settings: Triton's gRPC ``host:port``, the deadline per call and the
            client-level retries on ``UNAVAILABLE`` (the pipeline retries too).
    """

    def __init__(self, settings: TritonSettings) -> None:
        s = settings
        self._client = TritonDetectorClient(s.url, s.timeout_s, s.retries, s.backoff_s)

    async def info(self) -> ModelInfo:
        """Versions and policy from the pipeline model's config parameters."""
        try:
            info = await self._client.detector_info()
        except InferenceUnavailableError as exc:
            raise TransientError(str(exc)) from exc
        versions = model_versions(info.versions)
        ref = info.score_reference
        return ModelInfo(
            versions.policy,
            versions,
            info.max_batch_size,
            ScoreReference.from_dict(ref) if ref is not None else None,
        )

    async def detect(
        self,
        images: npt.NDArray[np.uint8],
        captions: Sequence[str | None] | None = None,
    ) -> Sequence[Detection]:
        """One Triton call (split by the client only above ``max_batch_size``).

        ``captions`` go to the pipeline's optional ``caption`` input.
        """
        try:
            return await self._client.detect(images, captions)
        except InferenceUnavailableError as exc:
            raise TransientError(str(exc)) from exc
        except InvalidInputError as exc:
            raise PoisonMessageError(
                str(exc), error_class="invalid_input", stage="infer"
            ) from exc

    async def ready(self) -> bool:
        """Whether the pipeline model is loaded and reachable."""
        return await self._client.model_ready(triton_names.PIPELINE_MODEL)

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()


class TritonRowEncoder:
    """The learner's encoder: Triton's `names.ENCODER_MODEL` to kNN feature rows.

    Calls the encoder model by name (not the pipeline), then flattens with the
    artifact's layout and applies the kNN head's view, as the served head does.

    Args:
        settings: Triton's gRPC address, deadline and retries.
        layout: The artifact encoder's flat-row layout.
        view: The kNN head's view of the flat rows.
    """

    def __init__(
        self, settings: TritonSettings, layout: FeatureLayout, view: FeatureView
    ) -> None:
        s = settings
        self._client = TritonDetectorClient(s.url, s.timeout_s, s.retries, s.backoff_s)
        self.layout, self.view = layout, view

    async def rows(self, images: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """(n, 224, 224, 3) uint8 images to (n, view.dim) float32 rows.

        Raises:
            TransientError: Triton stayed unavailable.
            PoisonMessageError: Triton rejected the input (stage ``infer``).
        """
        try:
            encoding = await self._client.embed(images)
        except InferenceUnavailableError as exc:
            raise TransientError(str(exc)) from exc
        except InvalidInputError as exc:
            raise PoisonMessageError(
                str(exc), error_class="invalid_input", stage="infer"
            ) from exc
        return self.view.apply(encoding.flat(self.layout))

    async def ready(self) -> bool:
        """Whether the encoder model is loaded and reachable."""
        return await self._client.model_ready(triton_names.ENCODER_MODEL)

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()
