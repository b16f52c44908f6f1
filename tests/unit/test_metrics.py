"""Unit tests for serving.scoring.metrics (sklearn only as an oracle here)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
)
from sklearn.metrics import roc_curve as sk_roc_curve

from serving.errors import InvalidInputError
from serving.scoring.metrics import (
    accuracy_at,
    average_precision,
    pr_curve,
    roc_auc,
    roc_curve,
    threshold_at_fpr,
    tpr_at_fpr,
)


def _tied_data(
    rng: np.random.Generator, n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    y = rng.integers(0, 2, n)
    y[:2] = (0, 1)
    s = rng.integers(0, 6, n) / 5.0  # heavy ties
    return y, s


def test_average_precision_matches_sklearn_with_ties(rng: np.random.Generator) -> None:
    for n in (2, 3, 10, 57, 400):
        y, s = _tied_data(rng, n)
        assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))


def test_roc_auc_matches_sklearn_with_ties(rng: np.random.Generator) -> None:
    for n in (2, 3, 10, 57, 400):
        y, s = _tied_data(rng, n)
        assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_metrics_match_sklearn_continuous(rng: np.random.Generator) -> None:
    y = rng.integers(0, 2, 1000)
    s = rng.normal(size=1000) + y
    assert average_precision(y, s) == pytest.approx(average_precision_score(y, s))
    assert roc_auc(y, s) == pytest.approx(roc_auc_score(y, s))


def test_roc_curve_matches_sklearn(rng: np.random.Generator) -> None:
    y, s = _tied_data(rng, 200)
    fpr, tpr, thr = roc_curve(y, s)
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    assert thr[0] == math.inf


def test_pr_curve_matches_sklearn(rng: np.random.Generator) -> None:
    y, s = _tied_data(rng, 200)
    prec, rec, thr = pr_curve(y, s)
    sk_prec, sk_rec, sk_thr = precision_recall_curve(y, s)
    np.testing.assert_allclose(prec[-len(sk_prec) :], sk_prec)
    np.testing.assert_allclose(rec[-len(sk_rec) :], sk_rec)
    np.testing.assert_allclose(thr[-len(sk_thr) :], sk_thr)


def test_roc_auc_perfect_and_all_tied() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9]) == 1.0
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == 0.5
    assert average_precision([0, 1, 0, 1], [0.5] * 4) == 0.5


def test_tpr_at_fpr_hand_case() -> None:
    reals = np.arange(10.0)  # 0..9
    fakes = np.array([9.0, 8.5, 8.0, 3.0, 10.0])
    y = np.r_[np.zeros(10), np.ones(5)]
    s = np.r_[reals, fakes]
    # FPR 10 %: one real (9) may be flagged -> flag s > 8 -> fakes 9, 8.5, 10.
    assert tpr_at_fpr(y, s, 0.1) == pytest.approx(3 / 5)
    # FPR 5 %: no real may be flagged -> flag s > 9 -> only 10.
    assert tpr_at_fpr(y, s, 0.05) == pytest.approx(1 / 5)
    assert tpr_at_fpr(y, s, 1.0) == 1.0


def test_threshold_at_fpr_never_splits_ties() -> None:
    reals = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    thr = threshold_at_fpr(reals, 0.4)  # k = 2, but 2.0 is tied three times
    assert thr > 2.0
    assert np.mean(reals >= thr) <= 0.4


def test_threshold_at_fpr_uses_full_budget_despite_float_error() -> None:
    reals = np.arange(100.0)
    assert np.mean(reals >= threshold_at_fpr(reals, 0.29)) == pytest.approx(0.29)


def test_threshold_at_fpr_is_order_free(rng: np.random.Generator) -> None:
    reals = rng.normal(size=501)
    assert threshold_at_fpr(reals, 0.01) == threshold_at_fpr(
        rng.permutation(reals), 0.01
    )


def test_accuracy_at_real_fake_split() -> None:
    y = [0, 0, 0, 0, 1, 1]
    s = [0.1, 0.2, 0.6, 0.4, 0.9, 0.3]
    accs = accuracy_at(y, s, 0.5)
    assert accs.real_acc == pytest.approx(0.75)
    assert accs.fake_acc == pytest.approx(0.5)
    assert accs.acc == pytest.approx(4 / 6)
    assert math.isnan(accuracy_at([0, 0], [0.1, 0.9], 0.5).fake_acc)


@pytest.mark.parametrize(
    ("y", "s"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3]),
        ([0, 2], [0.1, 0.2]),
        ([0, 1], [0.1]),
        ([0, 1], [0.1, np.nan]),
    ],
)
def test_metrics_reject_bad_input(y: list[int], s: list[float]) -> None:
    with pytest.raises(InvalidInputError):
        average_precision(y, s)
    with pytest.raises(InvalidInputError):
        roc_auc(y, s)
