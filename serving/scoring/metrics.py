"""Domain: ranking and threshold metrics for binary detection, in pure numpy.

Conventions: label 1 = fake (AI-generated), 0 = real; a higher score means "more
likely fake"; an image is flagged as fake when ``score >= threshold``.

`average_precision` and `roc_auc` follow scikit-learn's `average_precision_score`
and `roc_auc_score` exactly, ties included: tied scores form one operating point
(step-wise precision for AP, a trapezoid for AUC).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError

FloatArray = npt.NDArray[np.float64]
ArrayLike = npt.ArrayLike

# floor(target * n) is computed with this slack so that 0.29 * 100 counts as 29.
_FLOOR_EPS = 1e-9


@dataclass(frozen=True)
class Accuracies:
    """Accuracies at one threshold, as UnivFD reports them.

    Attributes:
        acc: Accuracy over all images.
        real_acc: Accuracy on reals (1 - FPR); NaN when there are no reals.
        fake_acc: Accuracy on fakes (TPR); NaN when there are no fakes.
    """

    acc: float
    real_acc: float
    fake_acc: float


def check_labels_scores(
    y: ArrayLike, s: ArrayLike, *, need_both: bool = True
) -> tuple[npt.NDArray[np.int64], FloatArray]:
    """Validate and convert labels and scores.

    Args:
        y: (n,) labels in {0, 1}.
        s: (n,) finite scores.
        need_both: Require at least one real and one fake.

    Returns:
        ``(y, s)`` as int64 and float64 arrays.

    Raises:
        InvalidInputError: Shapes differ, arrays are empty or not 1-D, labels are not
            binary, scores are not finite, or (with `need_both`) a class is missing.
    """
    ya, sa = np.asarray(y), np.asarray(s, dtype=np.float64)
    if ya.ndim != 1 or sa.shape != ya.shape or ya.size == 0:
        raise InvalidInputError(
            f"need equal-length 1-D y and s, got {ya.shape}, {sa.shape}"
        )
    if not np.isin(ya, (0, 1)).all():
        raise InvalidInputError("labels must be 0 (real) or 1 (fake)")
    if not np.isfinite(sa).all():
        raise InvalidInputError("scores must be finite")
    yi = ya.astype(np.int64)
    if need_both and (yi.min() == yi.max()):
        raise InvalidInputError(f"need both classes, got only label {int(yi[0])}")
    return yi, sa


def _binary_clf_curve(
    y: ArrayLike, s: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Cumulative false/true positives at each distinct score, highest first."""
    yi, sa = check_labels_scores(y, s)
    order = np.argsort(sa, kind="mergesort")[::-1]
    ys, ss = yi[order], sa[order]
    last = np.r_[np.flatnonzero(np.diff(ss)), ys.size - 1]
    tps = np.cumsum(ys, dtype=np.float64)[last]
    fps = (last + 1.0) - tps
    return fps, tps, ss[last]


def roc_curve(y: ArrayLike, s: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """ROC curve with one point per distinct score.

    Returns:
        ``(fpr, tpr, thresholds)``, starting at (0, 0) with threshold ``+inf``.
    """
    fps, tps, thr = _binary_clf_curve(y, s)
    fpr = np.r_[0.0, fps / fps[-1]]
    tpr = np.r_[0.0, tps / tps[-1]]
    return fpr, tpr, np.r_[np.inf, thr]


def pr_curve(y: ArrayLike, s: ArrayLike) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Precision-recall curve with one point per distinct score.

    Returns:
        ``(precision, recall, thresholds)`` in increasing-threshold order, ending at
        (precision 1, recall 0) as scikit-learn's `precision_recall_curve` does.
    """
    fps, tps, thr = _binary_clf_curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]


def average_precision(y: ArrayLike, s: ArrayLike) -> float:
    """Average precision: sum over thresholds of (R_n - R_{n-1}) * P_n."""
    fps, tps, _ = _binary_clf_curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def roc_auc(y: ArrayLike, s: ArrayLike) -> float:
    """Area under the ROC curve (trapezoids; a tie between classes counts 1/2)."""
    fpr, tpr, _ = roc_curve(y, s)
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2.0))


def threshold_at_fpr(real_scores: ArrayLike, target_fpr: float) -> float:
    """Lowest threshold that flags at most ``floor(target_fpr * n)`` of the reals.

    Order-free and O(n log n). With the rule ``flag if score >= threshold``, the
    threshold is the smallest float above the (k+1)-th highest real score, so that
    tied reals are never split and the FPR on these reals is ``<= target_fpr``.

    Args:
        real_scores: Scores of real images (non-empty, finite).
        target_fpr: Allowed false-positive rate in [0, 1].

    Returns:
        The threshold; ``-inf`` when every real may be flagged.

    Raises:
        InvalidInputError: Empty or non-finite scores, or target outside [0, 1].
    """
    r = np.asarray(real_scores, dtype=np.float64).ravel()
    if r.size == 0 or not np.isfinite(r).all():
        raise InvalidInputError("need at least one finite real score")
    if not 0.0 <= target_fpr <= 1.0:
        raise InvalidInputError(f"target FPR {target_fpr} is not in [0, 1]")
    k = math.floor(target_fpr * r.size + _FLOOR_EPS)
    if k >= r.size:
        return -math.inf
    kth = np.partition(r, r.size - 1 - k)[r.size - 1 - k]  # (k+1)-th highest
    return float(np.nextafter(kth, np.inf))


def tpr_at_fpr(y: ArrayLike, s: ArrayLike, fpr: float) -> float:
    """TPR at the threshold set on the reals so that their FPR is ``<= fpr``."""
    yi, sa = check_labels_scores(y, s)
    thr = threshold_at_fpr(sa[yi == 0], fpr)
    return float(np.mean(sa[yi == 1] >= thr))


def accuracy_at(y: ArrayLike, s: ArrayLike, threshold: float) -> Accuracies:
    """Overall, real and fake accuracy when ``score >= threshold`` means fake.

    UnivFD's `validate.py` uses ``score > 0.5``; the two differ only on exact ties.
    """
    yi, sa = check_labels_scores(y, s, need_both=False)
    pred = (sa >= threshold).astype(np.int64)
    real, fake = yi == 0, yi == 1
    real_acc = float(np.mean(pred[real] == 0)) if real.any() else math.nan
    fake_acc = float(np.mean(pred[fake] == 1)) if fake.any() else math.nan
    return Accuracies(float(np.mean(pred == yi)), real_acc, fake_acc)
