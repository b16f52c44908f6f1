"""Unit tests for serving.evaluation.perturb."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from serving.evaluation.perturb import (
    PERTURBATIONS,
    QUICK_SUITE,
    ROBUSTNESS_SUITE,
    noise,
)


def _img(seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB").convert(mode)


@pytest.mark.parametrize("name", ROBUSTNESS_SUITE)
def test_perturbation_is_deterministic_and_changes_image(name: str) -> None:
    fn = PERTURBATIONS[name]
    img = _img()
    a, b = fn(img), fn(img.copy())
    assert a.mode == "RGB"
    assert np.array_equal(np.asarray(a), np.asarray(b))
    same_size = a.size == img.size
    assert not (same_size and np.array_equal(np.asarray(a), np.asarray(img)))


@pytest.mark.parametrize("name", ROBUSTNESS_SUITE)
def test_perturbation_accepts_non_rgb(name: str) -> None:
    for mode in ("L", "RGBA"):
        assert PERTURBATIONS[name](_img(mode=mode)).mode == "RGB"


def test_perturbation_sizes() -> None:
    img = _img()  # 64 x 48
    assert PERTURBATIONS["resize_0.5"](img).size == (32, 24)
    assert PERTURBATIONS["resize_0.25"](img).size == (16, 12)
    assert PERTURBATIONS["crop_0.5"](img).size == (32, 24)
    assert PERTURBATIONS["jpeg_q75"](img).size == (64, 48)


def test_noise_depends_on_image_and_seed() -> None:
    a, b = _img(0), _img(1)
    delta_a = np.asarray(noise(5)(a), float) - np.asarray(a, float)
    delta_b = np.asarray(noise(5)(b), float) - np.asarray(b, float)
    assert not np.array_equal(delta_a, delta_b)
    assert not np.array_equal(np.asarray(noise(5, seed=1)(a)), np.asarray(noise(5)(a)))


def test_suites_have_stable_names() -> None:
    assert set(QUICK_SUITE) <= set(ROBUSTNESS_SUITE) == set(PERTURBATIONS)
    for name in (
        "jpeg_q95",
        "jpeg_q30",
        "resize_0.75",
        "blur_1",
        "noise_5",
        "crop_0.8",
    ):
        assert name in PERTURBATIONS
