"""Unit tests for the UpscalerJS ESRGAN-slim x2 adapter (needs the npm package)."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from serving.benchdata.esrgan import (
    MODEL_ID,
    WEIGHTS_SHA256,
    EsrganX2,
    KerasGraph,
    UnsupportedModelError,
    find_esrgan_model,
    read_weights,
)
from serving.errors import ArtifactMismatchError, InvalidInputError, MissingWeightsError
from serving.hashing import sha256_file

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def model_dir() -> Path:
    try:
        return find_esrgan_model()
    except MissingWeightsError as exc:
        pytest.skip(f"ESRGAN model files absent: {exc}")


@pytest.fixture(scope="module")
def model(model_dir: Path) -> EsrganX2:
    return EsrganX2(model_dir)


@pytest.fixture(scope="module")
def spec(model_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((model_dir / "model.json").read_text())
    return data


def _psnr(a: npt.NDArray[np.uint8], b: npt.NDArray[np.uint8], shave: int = 4) -> float:
    crop = (slice(shave, -shave), slice(shave, -shave))
    err = a[crop].astype(np.float64) - b[crop].astype(np.float64)
    return float(10 * np.log10(255.0**2 / np.mean(err**2)))


def _real_photo() -> npt.NDArray[np.uint8]:
    try:
        from skimage import data
    except ImportError:  # a smooth synthetic stand-in
        yy, xx = np.mgrid[0:96, 0:96].astype(np.float64) / 96
        chans = [128 + 100 * np.sin(3 * xx + k) * np.cos(2 * yy) for k in (0, 1, 2)]
        img: npt.NDArray[np.uint8] = np.clip(np.stack(chans, -1), 0, 255).astype(
            np.uint8
        )
        return img
    load: Callable[[], npt.ArrayLike] = data.chelsea
    return np.asarray(load(), dtype=np.uint8)[100:196, 150:246]  # cat's face, fur


def test_missing_dir_names_path_and_remedy(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError) as err:
        find_esrgan_model(tmp_path / "nowhere")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "model.json") in msg
    assert "npm pack @upscalerjs/default-model@1.0.0" in msg
    assert "tar xzf" in msg


def test_find_accepts_unpack_dir(model_dir: Path) -> None:
    assert find_esrgan_model(model_dir.parent.parent) == model_dir
    assert find_esrgan_model(model_dir) == model_dir


def test_output_is_exactly_2x_rgb(model: EsrganX2) -> None:
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (21, 30, 3), dtype=np.uint8))
    out = model.upscale(img)
    assert out.mode == "RGB"
    assert out.size == (60, 42)


def test_identity_and_hash(model: EsrganX2, model_dir: Path) -> None:
    assert (
        model.model_id == MODEL_ID == "upscalerjs-default-model@1.0.0 (ESRGAN-slim x2)"
    )
    assert model.weights_sha256 == WEIGHTS_SHA256
    assert model.weights_sha256 == sha256_file(model_dir / "group1-shard1of1.bin")


def test_all_weights_consumed(
    model: EsrganX2, spec: dict[str, Any], model_dir: Path
) -> None:
    names = [w["name"] for w in spec["weightsManifest"][0]["weights"]]
    assert model.weight_names == sorted(names)
    n_params = sum(p.numel() for p in model.net.parameters())
    assert 4 * n_params == (model_dir / "group1-shard1of1.bin").stat().st_size


def test_layer_classes(model: EsrganX2) -> None:
    assert model.net.layer_classes == [
        "Activation", "Add", "Concatenate", "Conv2D", "InputLayer", "UpSampling2D"
    ]  # fmt: skip


def test_weight_gaps_and_leftovers_raise(spec: dict[str, Any], model_dir: Path) -> None:
    weights, _ = read_weights(model_dir, spec["weightsManifest"])
    extra = {**weights, "ghost/kernel": np.zeros(1, np.float32)}
    with pytest.raises(ArtifactMismatchError, match="ghost/kernel"):
        KerasGraph(spec["modelTopology"], extra)
    missing = {k: v for k, v in weights.items() if k != "SR/bias"}
    with pytest.raises(ArtifactMismatchError, match="SR/bias"):
        KerasGraph(spec["modelTopology"], missing)


def test_unsupported_layer_class_is_named(
    spec: dict[str, Any], model_dir: Path
) -> None:
    weights, _ = read_weights(model_dir, spec["weightsManifest"])
    topo = copy.deepcopy(spec["modelTopology"])
    layer = next(
        x for x in topo["model_config"]["config"]["layers"] if x["name"] == "UPsample"
    )
    layer["class_name"] = "Lambda"
    with pytest.raises(UnsupportedModelError, match="Lambda"):
        KerasGraph(topo, weights)


def test_pinned_hash_mismatch_raises(model_dir: Path) -> None:
    with pytest.raises(ArtifactMismatchError, match="sha256"):
        EsrganX2(model_dir, sha256="0" * 64)


def test_rejects_non_rgb(model: EsrganX2) -> None:
    with pytest.raises(InvalidInputError):
        model.upscale(Image.new("RGBA", (8, 8)))


def test_matches_upscalerjs_reference_output(model: EsrganX2, model_dir: Path) -> None:
    """The package ships its fixture and the 2x result UpscalerJS produced for it."""
    assets = model_dir.parent / "assets"
    fixture, result = assets / "fixture.png", assets / "samples" / "2x" / "result.png"
    if not (fixture.is_file() and result.is_file()):
        pytest.skip(f"UpscalerJS fixture absent under {assets}")
    out = np.asarray(model.upscale(Image.open(fixture).convert("RGB")), dtype=np.int16)
    ref = np.asarray(Image.open(result).convert("RGB"), dtype=np.int16)
    diff = np.abs(out - ref)
    assert diff.max() <= 1  # float32 summation order differs from tfjs
    assert (diff == 0).mean() > 0.999


def test_psnr_on_real_photo_close_to_bicubic(model: EsrganX2) -> None:
    hr = Image.fromarray(_real_photo())
    lr = hr.resize((hr.width // 2, hr.height // 2), Image.Resampling.BICUBIC)
    sr = np.asarray(model.upscale(lr))
    bicubic = np.asarray(lr.resize(hr.size, Image.Resampling.BICUBIC))
    psnr_sr, psnr_bicubic = _psnr(sr, np.asarray(hr)), _psnr(bicubic, np.asarray(hr))
    assert psnr_sr >= 24.0
    assert psnr_sr >= psnr_bicubic - 1.0


def test_deterministic_across_calls_and_loads(model: EsrganX2, model_dir: Path) -> None:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8))
    first = np.asarray(model.upscale(img))
    assert np.array_equal(first, np.asarray(model.upscale(img)))
    assert np.array_equal(first, np.asarray(EsrganX2(model_dir).upscale(img)))
