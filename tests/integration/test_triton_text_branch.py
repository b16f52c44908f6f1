"""The image ⊕ text MLP end to end on the real tritonserver (Santosh et al. branch).

Image features: the REAL int8 CLIP encoder on photos and their conv-net "fakes"
(`tests/triton_fixtures.py`). Text: the tiny CLIP fixture's text tower (random
weights: this checks the plumbing, not detection). Heads are trained with the
``caption`` text source on made-up captions that vary per image, exported with the
tiny CLIP directory as the text tower, served by `TritonServer`, and compared with
the in-process `serving.detector.Detector`.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from triton_fixtures import (
    fake_images,
    fit_small_heads,
    missing_installs,
    photo_images,
)

from serving.artifacts import EncoderRecord, write_artifacts
from serving.detector import Detector
from serving.encoders.hf_clip import HfClipEncoder
from serving.encoders.onnx_clip import OnnxClipEncoder
from serving.features import FeatureMeta, FeatureSet
from serving.preprocessing import clip_default, policy_id
from serving.text_source import TextSource, encode_texts
from serving.triton import names
from serving.triton.client import TritonDetectorClient
from serving.triton.export import export_repository
from serving.triton.server import TritonServer
from stream.events import SourceRef, UploadEvent, Verdict, utc_now
from stream.pipeline import Pipeline, PipelineConfig
from stream.records import Incoming
from stream.settings import TritonSettings
from stream.triton_detector import TritonDetector

ATOL = 1e-5
TIMEOUT_S = 120.0
SOURCE = TextSource.parse("caption")
WORDS = ("a photo", "a cat", "a rocket", "coffee", "a painting", "a render")


@pytest.fixture(scope="module")
def encoder() -> OnnxClipEncoder:
    if (why := missing_installs()) is not None:
        pytest.skip(why)
    return OnnxClipEncoder(threads=2)


@pytest.fixture(scope="module")
def tower(tiny_clip_dir: Path) -> HfClipEncoder:
    return HfClipEncoder(tiny_clip_dir)


@pytest.fixture(scope="module")
def pixels() -> np.ndarray:
    reals = photo_images()
    return np.stack([clip_default(i) for i in [*reals, *fake_images(reals)]])


def _captions(n: int) -> list[str]:
    return [f"{WORDS[i % len(WORDS)]} {i % 4}" for i in range(n)]


@pytest.fixture(scope="module")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory,
    encoder: OnnxClipEncoder,
    tower: HfClipEncoder,
    pixels: np.ndarray,
) -> Path:
    y = np.repeat([0, 1], len(pixels) // 2).astype(np.int64)
    enc = encoder.encode(pixels)
    layout = replace(encoder.info.layout, text_dim=tower.info.text_dim)
    text = encode_texts(tower, SOURCE, _captions(len(y)))
    x = layout.flatten(enc.embeds, enc.blocks, text)
    meta = replace(
        FeatureMeta.of(encoder.info, policy_id("clip_default"), "test", len(y)),
        dim=layout.width,
        layout=layout.to_dict(),
    )
    paths = tuple(f"{'fake' if lab else 'real'}/{i}.png" for i, lab in enumerate(y))
    fs = FeatureSet(x, y, paths, ("photos",) * len(y), meta)
    heads, cals, _cal = fit_small_heads(fs)
    record = EncoderRecord.from_info(
        encoder.info, policy_id("clip_default"), SOURCE, tower.info
    )
    out = tmp_path_factory.mktemp("text_artifacts")
    write_artifacts(out, record, heads, cals, "mlp", {"test": True})
    return out


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, artifacts: Path, tiny_clip_dir: Path
) -> Iterator[TritonServer]:
    repo = tmp_path_factory.mktemp("text_repo") / "model_repository"
    export_repository(artifacts, repo, link_encoder=True, text_tower_dir=tiny_clip_dir)
    with TritonServer(repo, work_dir=tmp_path_factory.mktemp("triton")) as srv:
        yield srv


async def test_text_encoder_model_serves_the_hf_text_tower(
    server: TritonServer, tower: HfClipEncoder
) -> None:
    texts = ["a cat", "a dog on a sofa", ""]
    column = np.array([[t.encode()] for t in texts], dtype=np.object_)
    wanted = (names.TEXT_EMBEDDING.name,)
    async with TritonDetectorClient(server.grpc_url, timeout_s=TIMEOUT_S) as client:
        assert await client.model_ready(names.TEXT_ENCODER_MODEL)
        out = await client.infer(names.TEXT_ENCODER_MODEL, column, wanted)
    want = np.concatenate([tower.encode_text([t]) for t in texts])
    np.testing.assert_allclose(out[wanted[0]], want, rtol=0, atol=ATOL)


async def test_caption_over_bytes_input_moves_the_mlp_like_in_process(
    server: TritonServer,
    encoder: OnnxClipEncoder,
    tower: HfClipEncoder,
    artifacts: Path,
    pixels: np.ndarray,
) -> None:
    batch = pixels[[0, 0, 4, 20, 20]]
    captions = ["a cat", "a rocket 3", None, "coffee 1", "a painting 2"]
    async with TritonDetectorClient(server.grpc_url, timeout_s=TIMEOUT_S) as client:
        got = await client.detect(batch, captions)
    want = Detector.open(encoder, artifacts, tower).score_pixels(batch, captions)
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label
        assert g.probability == pytest.approx(w.probability, abs=ATOL)
        assert dict(g.head_scores) == pytest.approx(dict(w.head_scores), abs=ATOL)
        assert g.versions == w.versions
        assert g.versions["text_source"] == "caption"
    # same image, other caption: only the MLP's score moves
    for i, j in ((0, 1), (3, 4)):
        assert got[i].head_scores["mlp"] != pytest.approx(got[j].head_scores["mlp"])
        others = {k: v for k, v in got[i].head_scores.items() if k != "mlp"}
        assert others == pytest.approx(
            {k: v for k, v in got[j].head_scores.items() if k != "mlp"}, abs=1e-6
        )


async def test_requests_without_caption_input_still_work(
    server: TritonServer, pixels: np.ndarray
) -> None:
    batch = pixels[[2, 25]]
    async with TritonDetectorClient(server.grpc_url, timeout_s=TIMEOUT_S) as client:
        plain = await client.detect(batch)  # an older client: no caption input
        empty = await client.detect(batch, ["", ""])
    for p, e in zip(plain, empty, strict=True):
        assert dict(p.head_scores) == pytest.approx(dict(e.head_scores), abs=1e-6)


async def test_worker_pipeline_passes_event_captions_to_triton(
    server: TritonServer, pixels: np.ndarray
) -> None:
    buf = io.BytesIO()
    Image.fromarray(pixels[20]).save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    events = [
        UploadEvent(image_id=i, data_b64=data, uploaded_at=utc_now(), caption=c)
        for i, c in (("a", "a cat"), ("b", "a rocket 3"), ("c", None))
    ]
    batch = [
        Incoming(
            e.model_dump_json().encode(), SourceRef(topic="t", partition=0, offset=n)
        )
        for n, e in enumerate(events)
    ]
    detector = TritonDetector(TritonSettings(url=server.grpc_url, timeout_s=TIMEOUT_S))
    pipe = await Pipeline.create(detector, PipelineConfig())
    try:
        out = await pipe.handle_batch(batch)
    finally:
        await pipe.close()
        await detector.close()
    verdicts = [v for v in out if isinstance(v, Verdict)]
    assert [v.versions.text_source for v in verdicts] == ["caption"] * 3
    mlp = [v.head_scores["mlp"] for v in verdicts]
    assert len(set(mlp)) == 3  # one image, three texts ("" for no caption)
    assert len({v.head_scores["linear_probe"] for v in verdicts}) == 1
