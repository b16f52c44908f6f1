"""Trivial detectors must score near chance on the benchmark, per family and pooled.

A benchmark where file size, mean colour, contrast, image size, the container or the
JPEG quantisation table separates reals from fakes measures the shortcut, not the
detector (both images of a pair share one format path, so the last three must be
exactly at chance). "Near chance" is
|AUC - 0.5| <= 3 standard errors of the AUC under the null hypothesis (Hanley and
McNeil / Mann-Whitney: SE = sqrt((n1 + n0 + 1) / (12 n1 n0))), i.e. a two-sided
test at ~0.3 % per check (at most ~1 % for the best of four colour statistics).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from serving.benchdata import BenchConfig, build_benchmark, find_debian_dirs
from serving.benchdata.builder import FAMILIES, KNOWN_CONFOUNDS
from serving.benchdata.esrgan import find_esrgan_model
from serving.errors import MissingWeightsError

logger = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[2]
N_TEST = 32
Z_MARGIN = 3.0


def _families() -> tuple[str, ...]:
    try:
        find_esrgan_model()
    except MissingWeightsError:
        return tuple(f for f in FAMILIES if f != "esrgan_x2")
    return FAMILIES


# Only the test split is scored; train/cal are minimal and the generators get half
# the default steps to bound the build. Less-trained AEs are blurrier, so file size and
# colour are harder to match: a conservative setting. The build is still the slowest
# fixture in the suite: 743 s on an idle 2-core AVX2 machine (576 s of it training the
# 11 generators, vdsr_x2 alone 180 s), over the suite's 600 s default, and pytest-timeout
# counts a session fixture against the first test that asks for it.
pytestmark = pytest.mark.timeout(2400)
CONFIG = BenchConfig(
    n_train=1, n_cal=1, n_test=N_TEST, families=_families(), ae_steps=300
)
Features = dict[str, npt.NDArray[np.float64]]


def roc_auc(labels: npt.NDArray[np.int64], scores: npt.NDArray[np.float64]) -> float:
    """Mann-Whitney AUC with average ranks for ties (all ties -> exactly 0.5)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    n1, n0 = int(labels.sum()), int((1 - labels).sum())
    return float((ranks[labels == 1].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def margin(n1: int, n0: int) -> float:
    """Z_MARGIN standard errors of the AUC under the null."""
    return Z_MARGIN * math.sqrt((n1 + n0 + 1) / (12 * n1 * n0))


def _features(paths: list[Path]) -> Features:
    size, rgb, std, qt, area = [], [], [], [], []
    for path in paths:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.float64)
            tables = getattr(im, "quantization", None) or {}
            qt.append(f"{im.format} " + json.dumps(sorted(tables.items())))
        rgb.append(arr.mean(axis=(0, 1)))
        std.append(float(arr.std()))
        area.append(float(arr.shape[0] * arr.shape[1]))
        size.append(float(path.stat().st_size))
    table_ids = {t: float(k) for k, t in enumerate(sorted(set(qt)))}
    colour = np.array(rgb)
    return {
        "file_size": np.array(size),
        "mean_r": colour[:, 0],
        "mean_g": colour[:, 1],
        "mean_b": colour[:, 2],
        "brightness": colour @ np.array([0.299, 0.587, 0.114]),
        "pixel_std": np.array(std),
        "pixels": np.array(area),
        "qtable": np.array([table_ids[t] for t in qt]),
    }


@pytest.fixture(scope="session")
def bench(
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, tuple[npt.NDArray[np.int64], Features]]:
    out = tmp_path_factory.mktemp("trivial") / "bench"
    build_benchmark(
        out, CONFIG, progress=False, extra_photo_dirs=find_debian_dirs(REPO)
    )
    data = {}
    for family in CONFIG.families:
        real = sorted((out / "test" / family / "0_real").iterdir())
        fake = sorted((out / "test" / family / "1_fake").iterdir())
        labels = np.array([0] * len(real) + [1] * len(fake), dtype=np.int64)
        data[family] = (labels, _features(real + fake))
    labels = np.concatenate([data[f][0] for f in CONFIG.families])
    keys = data[CONFIG.families[0]][1]
    data["pooled"] = (
        labels,
        {k: np.concatenate([data[f][1][k] for f in CONFIG.families]) for k in keys},
    )
    return data


def _worst_auc(
    labels: npt.NDArray[np.int64], feats: Features, keys: tuple[str, ...]
) -> tuple[str, float]:
    aucs = {k: roc_auc(labels, feats[k]) for k in keys}
    worst = max(aucs, key=lambda k: abs(aucs[k] - 0.5))
    return worst, aucs[worst]


DETECTORS: dict[str, tuple[str, ...]] = {
    "file_size": ("file_size",),
    "mean_colour": ("mean_r", "mean_g", "mean_b", "brightness"),
    "pixel_std": ("pixel_std",),
}
GROUPS = (*CONFIG.families, "pooled")
# Documented confounds (KNOWN_CONFOUNDS), not tested: the DCGAN faces' contrast, the
# SDEdit fakes' residual noise (larger files; AUC ~0.72 at n=32), pooled contrast.
SKIP = {
    ("dcgan_faces", "pixel_std"),
    ("diffusion_sdedit", "file_size"),
    ("pooled", "pixel_std"),
}
assert {g for g, _ in SKIP} - {"pooled"} <= set(KNOWN_CONFOUNDS)


@pytest.mark.parametrize("detector", DETECTORS)
@pytest.mark.parametrize("group", GROUPS)
def test_trivial_detector_is_near_chance(
    bench: dict[str, tuple[npt.NDArray[np.int64], Features]],
    group: str,
    detector: str,
    record_property: Callable[[str, object], None],
) -> None:
    if (group, detector) in SKIP:
        pytest.skip(f"{group}: {detector} is a documented confound")
    labels, feats = bench[group]
    n1, n0 = int(labels.sum()), int((1 - labels).sum())
    which, auc = _worst_auc(labels, feats, DETECTORS[detector])
    m = margin(n1, n0)
    logger.info(
        "%s %s: AUC %.3f (%s), margin %.3f, n=%d/%d",
        group,
        detector,
        auc,
        which,
        m,
        n1,
        n0,
    )
    record_property(f"auc_{group}_{detector}", round(auc, 4))
    assert abs(auc - 0.5) <= m, (
        f"{group}/{detector}: AUC {auc:.3f} ({which}) outside 0.5 +- {m:.3f}"
    )


@pytest.mark.parametrize("group", GROUPS)
def test_container_quality_and_size_are_paired(
    bench: dict[str, tuple[npt.NDArray[np.int64], Features]], group: str
) -> None:
    labels, feats = bench[group]
    for key in ("qtable", "pixels"):
        real, fake = feats[key][labels == 0], feats[key][labels == 1]
        assert sorted(real.tolist()) == sorted(fake.tolist())
        assert roc_auc(labels, feats[key]) == 0.5
    if group == "pooled":
        assert len(set(feats["qtable"].tolist())) > 3  # PNG, WebP, JPEG qualities


def test_roc_auc_matches_known_values() -> None:
    y = np.array([0, 0, 1, 1], dtype=np.int64)
    assert roc_auc(y, np.array([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(y, np.array([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.array([1.0, 1.0, 1.0, 1.0])) == 0.5
    assert margin(32, 32) == pytest.approx(3 * math.sqrt(65 / (12 * 32 * 32)))
