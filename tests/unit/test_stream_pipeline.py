from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from stream.dev.testing import FakeDetector, bomb_png, jpeg_bytes, truncated_jpeg
from stream.errors import FatalError, TransientError
from stream.events import SourceRef, UploadEvent, Verdict, utc_now
from stream.fetch import FetchLimits
from stream.pipeline import Pipeline, PipelineConfig, parse_exemplar
from stream.records import Failure, Incoming

BRIGHT, DARK = jpeg_bytes((250, 250, 250)), jpeg_bytes((5, 5, 5))


def _incoming(payload: bytes, offset: int) -> Incoming:
    return Incoming(payload, SourceRef(topic="up", partition=0, offset=offset))


def _upload(image_id: str, data: bytes, **kw: object) -> bytes:
    event = UploadEvent(
        image_id=image_id,
        data_b64=base64.b64encode(data).decode(),
        uploaded_at=utc_now(),
        **kw,  # type: ignore[arg-type]
    )
    return event.model_dump_json().encode()


async def _pipeline(detector: FakeDetector, **kw: object) -> Pipeline:
    config = PipelineConfig(infer_backoff_s=0.0, **kw)  # type: ignore[arg-type]
    return await Pipeline.create(detector, config)


async def test_pipeline_one_verdict_per_event_in_order() -> None:
    detector = FakeDetector()
    pipe = await _pipeline(detector)
    batch = [
        _incoming(_upload(f"i{n}", BRIGHT if n % 2 else DARK), n) for n in range(6)
    ]
    out = await pipe.handle_batch(batch)
    assert [o.image_id for o in out if isinstance(o, Verdict)] == [
        f"i{n}" for n in range(6)
    ]
    assert detector.calls == [2]  # one call per batch; identical bytes inferred once
    v = out[1]
    assert isinstance(v, Verdict)
    assert v.label == "ai_generated"
    assert v.source.offset == 1
    assert v.content_sha256 == hashlib.sha256(BRIGHT).hexdigest()
    assert v.versions.policy == "clip_default@1"
    assert v.nearest_exemplars[0].id == "exemplar-1"
    assert v.timings.total_s >= v.timings.infer_s > 0.0 or v.timings.infer_s == 0.0


async def test_pipeline_reupload_skips_inference() -> None:
    detector = FakeDetector()
    pipe = await _pipeline(detector)
    first = await pipe.handle_batch([_incoming(_upload("a", BRIGHT), 0)])
    again = await pipe.handle_batch([_incoming(_upload("b", BRIGHT), 1)])
    assert detector.calls == [1]
    assert isinstance(first[0], Verdict)
    assert isinstance(again[0], Verdict)
    assert again[0].cached
    assert not first[0].cached
    assert again[0].probability == first[0].probability


def _poison_cases(tmp_path: Path) -> dict[str, tuple[bytes, str, str]]:
    ok_file = tmp_path / "ok.jpg"
    ok_file.write_bytes(BRIGHT)
    return {
        "bad_json": (b"{not json", "bad_json", "parse"),
        "missing": (json.dumps({"image_id": "x"}).encode(), "schema", "parse"),
        "zero": (_upload("z", b""), "empty", "decode"),
        "text": (_upload("t", b"hello world"), "not_an_image", "decode"),
        "truncated": (_upload("tr", truncated_jpeg()), "truncated", "decode"),
        "bomb": (_upload("bo", bomb_png()), "decompression_bomb", "decode"),
        "oversize": (_upload("big", b"\xff" * 40_000), "too_large", "fetch"),
        "sha": (_upload("s", BRIGHT, sha256="0" * 64), "checksum_mismatch", "fetch"),
        "host": (
            UploadEvent(
                image_id="h", uri="https://evil.example/x.jpg", uploaded_at=utc_now()
            )
            .model_dump_json()
            .encode(),
            "uri_not_allowed",
            "fetch",
        ),
        "missing_file": (
            UploadEvent(
                image_id="f", uri=(tmp_path / "no.jpg").as_uri(), uploaded_at=utc_now()
            )
            .model_dump_json()
            .encode(),
            "not_found",
            "fetch",
        ),
    }


async def test_pipeline_poison_becomes_typed_failures(tmp_path: Path) -> None:
    cases = _poison_cases(tmp_path)
    pipe = await _pipeline(FakeDetector(), fetch=FetchLimits(inline_max_bytes=32_000))
    payloads = [p for p, _c, _s in cases.values()] + [_upload("good", DARK)]
    out = await pipe.handle_batch([_incoming(p, i) for i, p in enumerate(payloads)])
    got = [(o.error_class, o.stage) for o in out if isinstance(o, Failure)]
    assert got == [(c, s) for _p, c, s in cases.values()]
    assert isinstance(out[-1], Verdict)
    assert out[-1].image_id == "good"
    first = out[0]
    assert isinstance(first, Failure)
    assert first.incoming.payload == b"{not json"
    headers = first.headers()
    assert (headers.source_offset, headers.attempts) == (0, 1)


async def test_pipeline_retries_transient_then_raises() -> None:
    detector = FakeDetector()
    pipe = await _pipeline(detector, infer_attempts=3)
    detector.down = True
    with pytest.raises(TransientError):
        await pipe.handle_batch([_incoming(_upload("a", BRIGHT), 0)])
    detector.down = False
    out = await pipe.handle_batch([_incoming(_upload("a", BRIGHT), 0)])
    assert isinstance(out[0], Verdict)


async def test_pipeline_isolates_an_image_the_detector_rejects() -> None:
    detector = FakeDetector(reject=lambda img: float(img.mean()) > 200)
    pipe = await _pipeline(detector)
    batch = [
        _incoming(_upload("dark", DARK), 0),
        _incoming(_upload("bright", BRIGHT), 1),
    ]
    out = await pipe.handle_batch(batch)
    assert isinstance(out[0], Verdict)
    assert isinstance(out[1], Failure)
    assert (out[1].error_class, out[1].stage) == ("invalid_input", "infer")


async def test_pipeline_refuses_a_policy_this_code_does_not_have() -> None:
    with pytest.raises(FatalError, match="clip_default@99"):
        await Pipeline.create(FakeDetector(policy="clip_default@99"))
    with pytest.raises(FatalError, match="unknown"):
        await Pipeline.create(FakeDetector(policy="nope@1"))


def test_parse_exemplar_formats() -> None:
    e = parse_exemplar("fake 0.8125 bench/a b.jpg")
    assert (e.bank, e.similarity, e.id) == ("fake", 0.8125, "bench/a b.jpg")
    assert parse_exemplar("odd").id == "odd"
    assert np.isclose(parse_exemplar("real 1 x").similarity or 0, 1.0)


async def test_held_batch_counts_detector_failures_and_resumes() -> None:
    import asyncio

    from stream.app import make_worker
    from stream.runners.common import build_pipeline, process_until_done
    from stream.settings import StreamSettings, WorkerSettings

    settings = StreamSettings(
        worker=WorkerSettings(outage_poll_s=0.05, infer_attempts=1, infer_backoff_s=0)
    )
    detector = FakeDetector()
    worker = make_worker(settings, detector=detector)
    stop = asyncio.Event()
    pipe = await build_pipeline(worker, stop)
    assert pipe is not None
    detector.down = True
    task = asyncio.create_task(
        process_until_done(worker, pipe, [_incoming(_upload("a", BRIGHT), 0)], stop)
    )
    await asyncio.sleep(0.2)
    assert worker.health.circuit_open
    detector.down = False
    out = await asyncio.wait_for(task, 5)
    assert out is not None
    assert isinstance(out[0], Verdict)
    assert not worker.health.circuit_open
    get = worker.metrics.registry.get_sample_value
    failures = get(
        "synthguard_detector_failures_total", {"error_class": "TransientError"}
    )
    assert failures == 1.0
    assert get("synthguard_triton_available") == 1.0
