"""Unit tests for serving.scoring.calibration."""

from __future__ import annotations

import json

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.errors import InvalidInputError
from serving.scoring.calibration import (
    Calibration,
    calibrate,
    decide,
    fit_calibration,
)


def _split(
    rng: np.random.Generator, n: int = 800
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    y = np.r_[np.zeros(n // 2), np.ones(n // 2)].astype(int)
    s = rng.normal(size=n) + 2.0 * y
    return s, y


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_fit_calibration_meets_target_fpr(
    rng: np.random.Generator, method: str
) -> None:
    s, y = _split(rng)
    cal = fit_calibration(s, y, method=method, target_fpr=0.01, uncertain_fpr=0.05)
    p = calibrate(cal, s)
    assert np.mean(p[y == 0] >= cal.threshold) <= 0.01
    assert np.mean(p[y == 0] >= cal.uncertain_low) <= 0.05
    assert cal.uncertain_low <= cal.threshold
    assert cal.achieved_fpr == pytest.approx(np.mean(p[y == 0] >= cal.threshold))
    assert cal.achieved_tpr > 0.1
    assert (cal.n_real, cal.n_fake, cal.n_cal) == (400, 400, 800)


@pytest.mark.parametrize("method", ["platt", "temperature"])
def test_fit_calibration_is_order_free(rng: np.random.Generator, method: str) -> None:
    s, y = _split(rng)
    perm = rng.permutation(s.size)
    assert fit_calibration(s, y, method) == fit_calibration(s[perm], y[perm], method)


def test_platt_is_monotone_and_reasonable(rng: np.random.Generator) -> None:
    s, y = _split(rng, 4000)
    cal = fit_calibration(s, y, "platt")
    grid = np.linspace(-5, 7, 200)
    assert np.all(np.diff(calibrate(cal, grid)) > 0)
    # True posterior for N(0,1) vs N(2,1) is sigmoid(2s - 2).
    assert cal.slope == pytest.approx(2.0, rel=0.15)
    assert cal.bias == pytest.approx(-2.0, rel=0.15)


def test_temperature_has_zero_bias(rng: np.random.Generator) -> None:
    s, y = _split(rng)
    cal = fit_calibration(s, y, "temperature")
    assert cal.bias == 0.0
    assert calibrate(cal, [0.0])[0] == pytest.approx(0.5)
    assert cal.temperature == pytest.approx(1.0 / cal.slope)


def test_fit_calibration_separable_and_tiny() -> None:
    cal = fit_calibration([0.0, 1.0, 2.0, 10.0, 11.0, 12.0], [0, 0, 0, 1, 1, 1])
    assert np.isfinite(cal.slope)
    assert cal.achieved_fpr == 0.0
    assert cal.achieved_tpr == 1.0
    tied = fit_calibration([0.0, 1.0, 1.0, 1.0], [0, 0, 1, 1])
    assert tied.achieved_fpr <= 0.01


def test_decide_bands() -> None:
    cal = fit_calibration(
        np.arange(200.0), np.r_[np.zeros(100), np.ones(100)].astype(int)
    )
    lo, hi = cal.uncertain_low, cal.threshold
    assert lo < hi
    labels = decide(cal, [0.0, lo, (lo + hi) / 2, hi, 1.0])
    assert labels.tolist() == [
        "real",
        "uncertain",
        "uncertain",
        "ai_generated",
        "ai_generated",
    ]


def test_calibration_dict_round_trip(rng: np.random.Generator) -> None:
    s, y = _split(rng)
    cal = fit_calibration(s, y)
    data = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(data) == cal
    with pytest.raises(InvalidInputError):
        Calibration.from_dict({"method": "platt"})


def test_fit_calibration_missing_class_raises() -> None:
    with pytest.raises(InvalidInputError):
        fit_calibration([0.1, 0.2, 0.3], [0, 0, 0])
    with pytest.raises(InvalidInputError):
        fit_calibration([0.1, 0.2], [1, 1], method="temperature")


def test_fit_calibration_rejects_bad_settings() -> None:
    s, y = [0.0, 1.0, 2.0, 3.0], [0, 0, 1, 1]
    with pytest.raises(InvalidInputError):
        fit_calibration(s, y, method="isotonic")
    with pytest.raises(InvalidInputError):
        fit_calibration(s, y, target_fpr=0.1, uncertain_fpr=0.05)
    with pytest.raises(InvalidInputError):
        fit_calibration([1.0, 1.0, 1.0, 1.0], y)  # constant scores


_CAL = fit_calibration(np.arange(100.0), np.r_[np.zeros(50), np.ones(50)].astype(int))
_RANK = {"real": 0, "uncertain": 1, "ai_generated": 2}


@given(st.lists(st.floats(0.0, 1.0), min_size=2, max_size=50))
def test_decide_is_monotone_in_prob(probs: list[float]) -> None:
    p = np.sort(np.asarray(probs))
    ranks = [_RANK[label] for label in decide(_CAL, p)]
    assert ranks == sorted(ranks)


def test_fit_calibration_inverted_head_keeps_thresholds_valid() -> None:
    rng = np.random.default_rng(5)
    s = np.r_[rng.normal(1, 1, 200), rng.normal(-1, 1, 200)]  # reals score higher
    y = np.r_[np.zeros(200), np.ones(200)].astype(np.int64)
    cal = fit_calibration(s, y, target_fpr=0.05, uncertain_fpr=0.1)
    assert cal.slope > 0
    assert cal.achieved_fpr <= 0.05
