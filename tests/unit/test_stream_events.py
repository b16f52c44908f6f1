from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream import names
from stream.errors import PoisonMessageError
from stream.events import (
    SCHEMA_DIR,
    SCHEMAS,
    DeadLetterHeaders,
    ModelVersions,
    UploadEvent,
    parse_feedback,
    schema_text,
    utc_now,
)


@pytest.mark.parametrize("filename", sorted(SCHEMAS))
def test_committed_schema_files_equal_generated(filename: str) -> None:
    committed = (SCHEMA_DIR / filename).read_text(encoding="utf-8")
    assert committed == schema_text(SCHEMAS[filename]), (
        "regenerate with: python -m stream.events"
    )


def test_schema_files_are_json_schema_with_version() -> None:
    for filename in SCHEMAS:
        doc = json.loads((SCHEMA_DIR / filename).read_text())
        assert doc["$schema"].endswith("2020-12/schema")
        assert "schema_version" in doc["properties"]


def _event(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "image_id": "img-1",
        "uri": (Path(__file__).parent / "x.jpg").as_uri(),
        "uploaded_at": utc_now().isoformat(),
    }
    base.update(kw)
    return base


def test_upload_event_round_trip_and_tolerant_reader() -> None:
    raw = json.dumps(_event(future_field=1, tenant="t1")).encode()
    event = UploadEvent.model_validate_json(raw)
    assert (event.schema_version, event.tenant) == (1, "t1")
    again = UploadEvent.model_validate_json(event.model_dump_json())
    assert again == event


@pytest.mark.parametrize(
    "override",
    [
        {"data_b64": "AAAA"},  # both sources
        {"uri": None},  # neither
        {"image_id": ""},
        {"sha256": "not-hex"},
        {"uploaded_at": "2026-01-01T00:00:00"},  # naive timestamp
    ],
    ids=["both", "neither", "empty_id", "bad_sha", "naive_time"],
)
def test_upload_event_rejects_invalid(override: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UploadEvent.model_validate(_event(**override))


def test_dead_letter_headers_round_trip() -> None:
    h = DeadLetterHeaders(
        error_class="truncated",
        error_message="cut",
        stage="decode",
        attempts=1,
        source_topic=names.UPLOADS_TOPIC,
        source_partition=2,
        source_offset=41,
        failed_at=utc_now(),
    )
    kafka = h.to_kafka()
    assert (names.HEADER_ERROR_CLASS, b"truncated") in kafka
    assert DeadLetterHeaders.from_kafka([("other", b"x"), *kafka]) == h


def test_schema_dir_is_in_the_package() -> None:
    assert Path(__file__).parents[2] / "stream" / "schemas" == SCHEMA_DIR


def _feedback(**kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "image_id": "img-1",
        "content_sha256": "a" * 64,
        "data_b64": "AAAA",
        "label": "ai_generated",
        "reviewer": "rev-1",
        "decided_at": utc_now().isoformat(),
    }
    base.update(kw)
    return base


def test_feedback_event_round_trip_and_tolerant_reader() -> None:
    raw = json.dumps(_feedback(future_field=1, tenant="t1")).encode()
    event = parse_feedback(raw)
    assert (event.schema_version, event.tenant, event.label) == (
        1,
        "t1",
        "ai_generated",
    )
    assert parse_feedback(event.model_dump_json().encode()) == event


@pytest.mark.parametrize(
    ("payload", "error_class"),
    [
        (b"{not json", "bad_json"),
        (b"[1, 2]", "schema"),
        (json.dumps(_feedback(label="uncertain")).encode(), "schema"),
        (json.dumps(_feedback(uri="file:///x.jpg")).encode(), "schema"),
        (json.dumps(_feedback(data_b64=None)).encode(), "schema"),
        (json.dumps(_feedback(content_sha256="A" * 64)).encode(), "schema"),
        (json.dumps(_feedback(reviewer="a b")).encode(), "schema"),
        (json.dumps(_feedback(decided_at="2026-01-01T00:00:00")).encode(), "schema"),
    ],
    ids=["bad_json", "array", "uncertain", "both", "neither", "sha", "rev", "naive"],
)
def test_parse_feedback_raises_typed_poison(payload: bytes, error_class: str) -> None:
    with pytest.raises(PoisonMessageError) as info:
        parse_feedback(payload)
    assert (info.value.error_class, info.value.stage) == (error_class, "parse")


def test_model_versions_carry_the_bank_version_only_when_there_is_one() -> None:
    v = ModelVersions(
        encoder="e",
        policy="p",
        heads="h",
        calibration="c",
        artifacts="a",
        synthguard="s",
    )
    assert v.with_bank(None) is v
    assert "knn_bank" not in v.model_dump(mode="json")
    assert v.with_bank("0123abcd").model_dump(mode="json")["knn_bank"] == "0123abcd"
