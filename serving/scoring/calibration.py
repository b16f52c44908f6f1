"""Domain: map head scores to probabilities and pick deployable decision thresholds.

Two one-dimensional calibrators, both ``p = sigmoid(slope * score + bias)``:

- ``platt``: slope and bias fitted by damped Newton (IRLS) on the log-loss, with
  Platt's (1999) smoothed targets ``(n_fake + 1) / (n_fake + 2)`` and
  ``1 / (n_real + 2)`` and a tiny L2 term on the slope, so that separable or tiny
  splits still give a finite slope;
- ``temperature``: a single scale ``slope = 1 / T`` with zero bias, for heads whose
  score is already a logit.

The decision threshold is then chosen on the calibrated probabilities of the reals
so that the false-positive rate is at most `target_fpr`; a looser `uncertain_fpr`
gives the lower edge of the "uncertain" band. The caller must pass the
**calibration split**, never the test split: thresholds fitted on test labels (as
UnivFD's ``acc1``) are not deployable.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError
from serving.scoring.metrics import ArrayLike, FloatArray, check_labels_scores
from serving.scoring.metrics import threshold_at_fpr as _threshold_at_fpr

logger = logging.getLogger(__name__)

METHODS: Final = ("platt", "temperature")
LABEL_AI: Final = "ai_generated"
LABEL_REAL: Final = "real"
LABEL_UNCERTAIN: Final = "uncertain"
_L2: Final = 1e-4  # on the slope of standardised scores, per sample
_MAX_ITER: Final = 100
_TOL: Final = 1e-12


@dataclass(frozen=True)
class Calibration:
    """A fitted calibrator and its decision thresholds (stored in the manifest).

    Attributes:
        method: "platt" or "temperature".
        slope: Multiplier of the head score (``1 / temperature``); always > 0.
        bias: Added after scaling (0 for "temperature").
        threshold: Probability at or above which an image is "ai_generated".
        uncertain_low: Probability at or above which (and below `threshold`) an
            image is "uncertain"; below it, "real".
        target_fpr: FPR on calibration reals that `threshold` was chosen for.
        uncertain_fpr: FPR on calibration reals that `uncertain_low` was chosen for.
        n_real: Number of calibration reals.
        n_fake: Number of calibration fakes.
        achieved_fpr: FPR at `threshold` on the calibration reals.
        achieved_tpr: TPR at `threshold` on the calibration fakes.
    """

    method: str
    slope: float
    bias: float
    threshold: float
    uncertain_low: float
    target_fpr: float
    uncertain_fpr: float
    n_real: int
    n_fake: int
    achieved_fpr: float
    achieved_tpr: float

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInputError(f"unknown calibration method {self.method!r}")
        if not (
            math.isfinite(self.slope) and self.slope > 0 and math.isfinite(self.bias)
        ):
            raise InvalidInputError(
                f"bad calibration parameters {self.slope}, {self.bias}"
            )
        if not self.uncertain_low <= self.threshold:
            raise InvalidInputError("uncertain_low must not exceed threshold")

    @property
    def n_cal(self) -> int:
        """Size of the calibration split."""
        return self.n_real + self.n_fake

    @property
    def temperature(self) -> float:
        """The equivalent temperature ``1 / slope``."""
        return 1.0 / self.slope

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form for the artifact manifest."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Calibration:
        """Inverse of `to_dict`; raises InvalidInputError on missing or bad fields."""
        try:
            return cls(
                method=str(data["method"]),
                **{k: float(data[k]) for k in _FLOAT_FIELDS},
                n_real=int(data["n_real"]),
                n_fake=int(data["n_fake"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"bad calibration record: {exc}") from exc


_FLOAT_FIELDS: Final = (
    "slope",
    "bias",
    "threshold",
    "uncertain_low",
    "target_fpr",
    "uncertain_fpr",
    "achieved_fpr",
    "achieved_tpr",
)


def _sigmoid(z: FloatArray) -> FloatArray:
    out: FloatArray = np.exp(-np.logaddexp(0.0, -z))
    return out


def _objective(w: FloatArray, X: FloatArray, t: FloatArray) -> float:
    z = X @ w
    return float(np.mean(np.logaddexp(0.0, z) - t * z) + 0.5 * _L2 * w[0] ** 2)


def _newton(X: FloatArray, t: FloatArray) -> FloatArray:
    """Minimise the regularised log-loss of ``sigmoid(X @ w)`` by damped Newton."""
    n, d = X.shape
    w = np.zeros(d)
    reg = np.zeros((d, d))
    reg[0, 0] = _L2
    f = _objective(w, X, t)
    for _ in range(_MAX_ITER):
        p = _sigmoid(X @ w)
        grad = X.T @ (p - t) / n + reg @ w
        hess = (X.T * (p * (1.0 - p))) @ X / n + reg + 1e-12 * np.eye(d)
        step = np.linalg.solve(hess, grad)
        lr = 1.0
        while lr > 1e-10:
            f_new = _objective(w - lr * step, X, t)
            if f_new <= f:
                break
            lr /= 2.0
        w, f_old, f = w - lr * step, f, f_new
        if f_old - f < _TOL:
            break
    return w


def _fit_params(
    s: FloatArray, y: npt.NDArray[np.int64], method: str
) -> tuple[float, float]:
    n_fake = int(y.sum())
    n_real = y.size - n_fake
    t = np.where(y == 1, (n_fake + 1.0) / (n_fake + 2.0), 1.0 / (n_real + 2.0))
    if method == "platt":
        mean, std = float(s.mean()), float(s.std())
        if std == 0.0:
            raise InvalidInputError("calibration scores are constant")
        a, b = _newton(np.c_[(s - mean) / std, np.ones_like(s)], t)
        return float(a / std), float(b - a * mean / std)
    rms = float(np.sqrt(np.mean(s**2)))
    if rms == 0.0:
        raise InvalidInputError("calibration scores are all zero")
    (a,) = _newton(np.c_[s / rms], t)
    return float(a / rms), 0.0


def fit_calibration(
    scores: ArrayLike,
    y: ArrayLike,
    method: str = "platt",
    target_fpr: float = 0.01,
    uncertain_fpr: float = 0.05,
) -> Calibration:
    """Fit a calibrator and its thresholds on the calibration split.

    The result depends only on the multiset of (score, label) pairs: inputs are
    sorted first, and thresholds come from order statistics of the reals.

    Args:
        scores: (n,) head scores of the **calibration** split (never the test split).
        y: (n,) labels, 1 = fake, 0 = real; both classes must be present.
        method: "platt" or "temperature".
        target_fpr: FPR on reals allowed at the "ai_generated" threshold.
        uncertain_fpr: Looser FPR giving the lower edge of the "uncertain" band.

    Returns:
        The fitted `Calibration`.

    Raises:
        InvalidInputError: A class is missing, inputs are malformed, or the method
            or FPRs are invalid.
    """
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}, got {method!r}")
    if not 0.0 < target_fpr <= uncertain_fpr < 1.0:
        raise InvalidInputError("need 0 < target_fpr <= uncertain_fpr < 1")
    yi, s = check_labels_scores(y, scores)
    order = np.lexsort((yi, s))
    yi, s = yi[order], s[order]
    slope, bias = _fit_params(s, yi, method)
    if not slope > 0.0:
        # A head that ranks reals above fakes on this split must not crash an
        # evaluation run: keep a rank-preserving map so the FPR-targeted thresholds
        # stay valid, and say loudly that the probabilities are not calibrated.
        logger.warning(
            "scores do not rank fakes above reals (Platt slope %.3g); "
            "using a standardising map, probabilities are uncalibrated",
            slope,
        )
        std = float(s.std()) or 1.0
        slope, bias = 1.0 / std, -float(s.mean()) / std
    p = _sigmoid(slope * s + bias)
    p_real, p_fake = p[yi == 0], p[yi == 1]
    if p_real.size * target_fpr < 1.0:
        logger.warning(
            "only %d calibration reals: FPR %.3g is met by the max real",
            p_real.size,
            target_fpr,
        )
    thr = _threshold_at_fpr(p_real, target_fpr)
    low = _threshold_at_fpr(p_real, uncertain_fpr)
    return Calibration(
        method=method,
        slope=slope,
        bias=bias,
        threshold=thr,
        uncertain_low=low,
        target_fpr=target_fpr,
        uncertain_fpr=uncertain_fpr,
        n_real=int(p_real.size),
        n_fake=int(p_fake.size),
        achieved_fpr=float(np.mean(p_real >= thr)),
        achieved_tpr=float(np.mean(p_fake >= thr)),
    )


def calibrate(cal: Calibration, scores: ArrayLike) -> FloatArray:
    """Calibrated probabilities ``sigmoid(slope * score + bias)`` (float64)."""
    s = np.asarray(scores, dtype=np.float64)
    if not np.isfinite(s).all():
        raise InvalidInputError("scores must be finite")
    return _sigmoid(cal.slope * s + cal.bias)


def decide(cal: Calibration, probs: ArrayLike) -> npt.NDArray[np.str_]:
    """Label each probability "ai_generated", "uncertain" or "real".

    ``p >= threshold`` is "ai_generated"; ``uncertain_low <= p < threshold`` is
    "uncertain"; anything lower is "real".
    """
    p = np.asarray(probs, dtype=np.float64)
    if np.isnan(p).any():
        raise InvalidInputError("probabilities must not be NaN")
    inner = np.where(p >= cal.uncertain_low, LABEL_UNCERTAIN, LABEL_REAL)
    out: npt.NDArray[np.str_] = np.where(p >= cal.threshold, LABEL_AI, inner)
    return out
