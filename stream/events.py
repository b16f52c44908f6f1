"""Domain: the wire schemas (JSON, ``schema_version`` 1) and their JSON Schema files.

- `UploadEvent` on `names.UPLOADS_TOPIC`, key ``image_id``: either a ``uri``
  (``file://`` or ``https://``; hosts are checked against an allowlist when fetched)
  or inline base64 ``data_b64`` under a configurable cap.
- `Verdict` on `names.VERDICTS_TOPIC`, key ``image_id``.
- The DLQ record on `names.DLQ_TOPIC`: the original key and payload bytes, unchanged,
  with `DeadLetterHeaders` as Kafka headers.
- `FeedbackEvent` on `names.FEEDBACK_TOPIC`, key ``content_sha256``: a reviewer's
  label for an image (``synthguard.feedback.v1``); bad ones go to
  `names.FEEDBACK_DLQ_TOPIC` in the same DLQ record shape. `parse_feedback` gives
  typed errors.

``python -m stream.events`` rewrites the JSON Schema files in ``stream/schemas``; a
unit test checks that the committed files equal the generated ones.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from pathlib import Path
from typing import Annotated, Final, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.config import JsonDict

from stream import names
from stream.errors import PoisonMessageError

SCHEMA_DIR: Final = Path(__file__).parent / "schemas"
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
ImageId = Annotated[str, Field(min_length=1, max_length=256)]
Label = Literal["ai_generated", "real", "uncertain"]
FeedbackLabel = Literal["ai_generated", "real"]
_ONE_SOURCE: Final[JsonDict] = {
    "oneOf": [
        {"required": ["uri"], "not": {"required": ["data_b64"]}},
        {"required": ["data_b64"], "not": {"required": ["uri"]}},
    ]
}


class _Wire(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class UploadEvent(_Wire):
    """An uploaded image to moderate.

    Attributes:
        schema_version: Always 1 for this model.
        image_id: The uploader's id; the Kafka key and the verdict's key.
        uri: ``file:///abs/path`` or ``https://host/path`` (claim check).
        data_b64: The image bytes inline, base64 (standard alphabet).
        sha256: Hex sha256 of the image bytes; checked when given.
        content_type: The declared media type (informational).
        caption: Text for the MLP's image ⊕ text branch, read when the served
            artifact's text source is ``caption`` (docs/text-branch.md).
        tenant: Owning tenant.
        trace_id: Correlation id, copied to the verdict.
        uploaded_at: When the upload happened (timezone-aware).
    """

    # tolerant reader: producers may add fields before consumers know them
    model_config = ConfigDict(
        frozen=True, extra="ignore", json_schema_extra=_ONE_SOURCE
    )

    schema_version: Literal[1] = 1
    image_id: ImageId
    uri: str | None = Field(default=None, max_length=4096)
    data_b64: str | None = None
    sha256: Sha256 | None = None
    content_type: str | None = Field(default=None, max_length=128)
    caption: str | None = Field(default=None, max_length=4096)
    tenant: str = Field(default="default", min_length=1, max_length=128)
    trace_id: str | None = Field(default=None, max_length=128)
    uploaded_at: AwareDatetime

    @model_validator(mode="after")
    def _one_source(self) -> UploadEvent:
        if (self.uri is None) == (self.data_b64 is None):
            raise ValueError("exactly one of uri and data_b64 must be given")
        return self


class FeedbackEvent(_Wire):
    """A reviewer's decision about an image: one row for the kNN banks.

    Attributes:
        schema_version: Always 1 for this model.
        image_id: The uploader's id of the reviewed image.
        content_sha256: Hex sha256 of the image bytes; the Kafka key, checked
            against the fetched bytes, and the bank's identity of the image.
        uri: ``file:///abs/path`` or ``https://host/path``, as for uploads.
        data_b64: The image bytes inline, base64 (standard alphabet).
        label: The reviewer's label (no ``uncertain``: feedback is a decision).
        reviewer: Who decided; the rate limit's and the metric's key.
        tenant: Owning tenant.
        decided_at: When the reviewer decided (timezone-aware).
    """

    model_config = ConfigDict(
        frozen=True, extra="ignore", json_schema_extra=_ONE_SOURCE
    )

    schema_version: Literal[1] = 1
    image_id: ImageId
    content_sha256: Sha256
    uri: str | None = Field(default=None, max_length=4096)
    data_b64: str | None = None
    label: FeedbackLabel
    reviewer: str = Field(pattern=r"^[A-Za-z0-9._@+-]{1,128}$")
    tenant: str = Field(default="default", min_length=1, max_length=128)
    decided_at: AwareDatetime

    @model_validator(mode="after")
    def _one_source(self) -> FeedbackEvent:
        if (self.uri is None) == (self.data_b64 is None):
            raise ValueError("exactly one of uri and data_b64 must be given")
        return self


def parse_feedback(payload: bytes) -> FeedbackEvent:
    """Parse one feedback record's value.

    Raises:
        PoisonMessageError: stage ``parse``, class ``bad_json`` (not a JSON object)
            or ``schema`` (a field is missing or invalid).
    """
    try:
        return FeedbackEvent.model_validate_json(payload)
    except ValidationError as exc:
        kinds = {e["type"] for e in exc.errors()}
        error_class = "bad_json" if kinds & {"json_invalid", "json_type"} else "schema"
        errs = exc.errors(include_url=False, include_input=False)
        text = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errs)
        raise PoisonMessageError(
            text[:1024], error_class=error_class, stage="parse"
        ) from exc


class Exemplar(_Wire):
    """A nearest neighbour from the kNN head's banks (the evidence)."""

    bank: str
    similarity: float | None
    id: str


class ModelVersions(_Wire):
    """What produced a verdict, from the served artifact manifest.

    Attributes:
        encoder: Encoder id (weights are pinned by sha256 in the manifest).
        policy: Versioned preprocessing policy, e.g. ``clip_default@1``.
        heads: Served head instances and kinds, ``name:kind`` comma-separated.
        calibration: Decision head and the artifact release it was calibrated in.
        artifacts: The artifact release (manifest ``created_utc``).
        synthguard: The code version that trained the artifacts.
        knn_bank: The reviewer-feedback bank version the kNN head scored with
            (docs/feedback.md). Added in schema 1.2; omitted when the head served
            its training banks only.
        text_source: Where the MLP's text came from (docs/text-branch.md):
            ``caption`` (the event's caption, ``""`` when it has none) or
            ``prompt:<text>``. Added in schema 1.3; omitted for image-only
            artifacts (text source ``none``).
    """

    encoder: str
    policy: str
    heads: str
    calibration: str
    artifacts: str
    synthguard: str
    knn_bank: str | None = Field(default=None, exclude_if=lambda v: v is None)
    text_source: str | None = Field(default=None, exclude_if=lambda v: v is None)

    def with_bank(self, version: str | None) -> ModelVersions:
        """These versions with the feedback bank `version` (unchanged for None)."""
        if version is None:
            return self
        return self.model_copy(update={"knn_bank": version})


class StageTimings(_Wire):
    """Seconds spent per stage for one event (``infer`` is its batch's call)."""

    fetch_s: float = 0.0
    decode_s: float = 0.0
    infer_s: float = 0.0
    total_s: float = 0.0


class SourceRef(_Wire):
    """Where an event was read."""

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)


class Verdict(_Wire):
    """The moderation verdict for one upload.

    Attributes:
        label: ``ai_generated`` (probability >= threshold), ``uncertain`` (between
            ``uncertain_low`` and threshold, or any of `reasons`) or ``real``.
        probability: Calibrated probability that the image is AI-generated.
        head_scores: Raw score of every served head, higher = more likely fake.
        cached: True when a re-upload of the same bytes skipped inference.
        reasons: Why the label is ``uncertain`` beyond the probability band:
            ``novel`` when the image is unlike every kNN exemplar. Added in schema
            1.1 (`names.VERDICT_SCHEMA_MINOR`); omitted from the JSON when empty, so
            such verdicts are byte-for-byte 1.0 records.
    """

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        json_schema_extra={"x-schema-minor": names.VERDICT_SCHEMA_MINOR},
    )

    schema_version: Literal[1] = 1
    image_id: ImageId
    content_sha256: Sha256
    label: Label
    probability: float = Field(ge=0.0, le=1.0)
    threshold: float
    uncertain_low: float
    head_scores: dict[str, float]
    nearest_exemplars: list[Exemplar]
    versions: ModelVersions
    timings: StageTimings
    source: SourceRef
    tenant: str
    trace_id: str | None = None
    cached: bool = False
    decided_at: AwareDatetime
    reasons: list[str] = Field(default_factory=list, exclude_if=lambda v: not v)


class DeadLetterHeaders(_Wire):
    """The headers of a DLQ record; its key and value are the original ones.

    Every value travels as UTF-8 text under the header named in `HEADER_NAMES`.
    """

    schema_version: Literal[1] = 1
    error_class: str
    error_message: str = Field(max_length=1024)
    stage: Literal["parse", "fetch", "decode", "infer", "pipeline"]
    attempts: int = Field(ge=1)
    source_topic: str
    source_partition: int = Field(ge=0)
    source_offset: int = Field(ge=0)
    failed_at: AwareDatetime

    def to_kafka(self) -> list[tuple[str, bytes]]:
        """Kafka headers: (name, UTF-8 value) pairs."""
        doc = self.model_dump(mode="json")
        return [(HEADER_NAMES[k], str(doc[k]).encode()) for k in HEADER_NAMES]

    @classmethod
    def from_kafka(cls, headers: list[tuple[str, bytes]]) -> DeadLetterHeaders:
        """Parse Kafka headers written by `to_kafka` (other headers are ignored)."""
        by_name = {name: value.decode() for name, value in headers}
        fields: dict[str, object] = {
            k: by_name[h] for k, h in HEADER_NAMES.items() if h in by_name
        }
        if "schema_version" in fields:  # Literal[1] does not coerce from text
            fields["schema_version"] = int(str(fields["schema_version"]))
        return cls.model_validate(fields)


HEADER_NAMES: Final = {
    "schema_version": names.HEADER_SCHEMA_VERSION,
    "error_class": names.HEADER_ERROR_CLASS,
    "error_message": names.HEADER_ERROR_MESSAGE,
    "stage": names.HEADER_STAGE,
    "attempts": names.HEADER_ATTEMPTS,
    "source_topic": names.HEADER_SOURCE_TOPIC,
    "source_partition": names.HEADER_SOURCE_PARTITION,
    "source_offset": names.HEADER_SOURCE_OFFSET,
    "failed_at": names.HEADER_FAILED_AT,
}
SCHEMAS: Final[dict[str, type[BaseModel]]] = {
    "upload_event.v1.json": UploadEvent,
    "verdict.v1.json": Verdict,
    "dead_letter_headers.v1.json": DeadLetterHeaders,
    "feedback_event.v1.json": FeedbackEvent,
}


def utc_now() -> dt.datetime:
    """The current time, timezone-aware UTC."""
    return dt.datetime.now(dt.UTC)


def schema_text(model: type[BaseModel]) -> str:
    """The JSON Schema of a model as committed: sorted keys, 2-space indent."""
    schema = model.model_json_schema(mode="serialization")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """(Re)write every JSON Schema file; returns their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for filename, model in SCHEMAS.items():
        path = directory / filename
        path.write_text(schema_text(model), encoding="utf-8")
        out.append(path)
    return out


if __name__ == "__main__":
    for written in write_schemas():
        sys.stdout.write(f"{written}\n")
