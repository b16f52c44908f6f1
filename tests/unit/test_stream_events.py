from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from stream import names
from stream.events import (
    SCHEMA_DIR,
    SCHEMAS,
    DeadLetterHeaders,
    UploadEvent,
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
