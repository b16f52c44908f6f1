"""The upload event's caption through the pipeline, for a ``caption`` text source."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from serving.scoring.detection import Detection
from stream.dev.testing import FAKE_VERSIONS, FakeDetector, jpeg_bytes
from stream.events import ModelVersions, SourceRef, UploadEvent, Verdict, utc_now
from stream.pipeline import Pipeline, PipelineConfig
from stream.ports import ModelInfo
from stream.records import Incoming
from stream.triton_detector import model_versions

BRIGHT = jpeg_bytes((250, 250, 250))


@dataclass
class _CaptionDetector(FakeDetector):
    text_source: str = "caption"
    captions: list[list[str | None]] = field(default_factory=list)

    async def info(self) -> ModelInfo:
        versions = FAKE_VERSIONS.model_copy(update={"text_source": self.text_source})
        return ModelInfo(self.policy, versions)

    async def detect(
        self,
        images: npt.NDArray[np.uint8],
        captions: Sequence[str | None] | None = None,
    ) -> Sequence[Detection]:
        self.captions.append(list(captions or []))
        return await super().detect(images, captions)


def _incoming(image_id: str, offset: int, caption: str | None) -> Incoming:
    event = UploadEvent(
        image_id=image_id,
        data_b64=base64.b64encode(BRIGHT).decode(),
        uploaded_at=utc_now(),
        caption=caption,
    )
    payload = event.model_dump_json().encode()
    return Incoming(payload, SourceRef(topic="up", partition=0, offset=offset))


async def test_pipeline_sends_captions_and_dedupes_per_caption() -> None:
    detector = _CaptionDetector()
    pipe = await Pipeline.create(detector, PipelineConfig(infer_backoff_s=0.0))
    batch = [_incoming("a", 0, "a cat"), _incoming("b", 1, "a dog")]
    batch += [_incoming("c", 2, "a cat"), _incoming("d", 3, None)]
    out = await pipe.handle_batch(batch)
    assert detector.captions == [["a cat", "a dog", None]]  # same bytes, 3 texts
    again = await pipe.handle_batch([_incoming("e", 4, "a dog")])
    assert detector.captions == [["a cat", "a dog", None]]  # a cache hit
    verdicts = [v for v in [*out, *again] if isinstance(v, Verdict)]
    assert len(verdicts) == 5
    assert {v.versions.text_source for v in verdicts} == {"caption"}
    assert verdicts[-1].cached


async def test_pipeline_prompt_source_sends_no_captions_and_dedupes_by_bytes() -> None:
    detector = _CaptionDetector(text_source="prompt:a photo")
    pipe = await Pipeline.create(detector, PipelineConfig(infer_backoff_s=0.0))
    out = await pipe.handle_batch([_incoming("a", 0, "x"), _incoming("b", 1, "y")])
    assert detector.captions == [[]]  # detect(images) only: the prompt is fixed
    assert [v.versions.text_source for v in out if isinstance(v, Verdict)] == [
        "prompt:a photo"
    ] * 2


def test_image_only_versions_omit_text_source() -> None:
    versions = model_versions({"encoder": "e", "policy": "p@1"})
    assert versions.text_source is None
    assert "text_source" not in versions.model_dump(mode="json")
    with_text = model_versions({"encoder": "e", "text_source": "caption"})
    assert with_text.text_source == "caption"
    assert ModelVersions.model_validate(with_text.model_dump()) == with_text
