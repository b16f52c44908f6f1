"""Domain: the small-data linear probe: standardised, class-balanced, L2 by grouped CV.

UnivFD trained its probe on ~720k images with plain BCE and no regularisation; on a
few thousand images that recipe overfits the families it has seen (generalisation.md
§1: a plain ``StandardScaler + LogisticRegression`` beats it by 0.15-0.25 AUC when a
family is held out). Here:

- features are standardised with the training mean / std;
- classes are weighted to balance;
- the L2 strength ``C`` is chosen by cross-validation **grouped by generator family**
  (families dealt into at most five held-out groups; stratified folds with fewer
  than three families), maximising the mean held-out ROC-AUC: the choice rewards what transfers to
  an unseen generator, not what fits the seen ones.

The standardisation is folded into the returned weight and bias, so scoring stays the
plain ``x @ w + b`` of `serving.scoring.probe.probe_logit`.

Speed: with fewer rows than columns (a 9216-d layer stack, a few thousand images) the
L2-regularised optimum lies in the span of the training rows, so every fit runs on the
rows' SVD coordinates ``U S`` (n columns instead of d) and maps back with ``V``; the
penalty ``|w|^2`` is the same in both bases, so the solution is the same.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError
from serving.scoring.metrics import roc_auc

logger = logging.getLogger(__name__)

FloatArray = npt.NDArray[np.float32]
LabelArray = npt.NDArray[np.int64]
_MIN_STD = 1e-6


@dataclass(frozen=True)
class LogRegConfig:
    """Hyper-parameters of the grouped-CV logistic probe.

    Attributes:
        c_grid: Candidate inverse L2 strengths, multiplied by ``64 / d`` so that the
            same grid suits 512-d embeddings and 9216-d layer stacks.
        max_iter: L-BFGS iterations per fit.
        folds: Cross-validation folds: families are dealt into at most this many
            held-out groups (stratified folds when there are fewer than three).
        seed: Seed of the fold assignment.
    """

    c_grid: tuple[float, ...] = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)
    max_iter: int = 500
    folds: int = 5
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "c_grid": list(self.c_grid)}


@dataclass(frozen=True)
class LogRegSummary:
    """What model selection found.

    Attributes:
        c: The chosen (unscaled) grid value.
        cv: ``leave_one_family_out`` or ``stratified_k_fold``.
        cv_auc: Mean held-out ROC-AUC per grid value, in grid order.
    """

    c: float
    cv: str
    cv_auc: tuple[float, ...]

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return {**asdict(self), "cv_auc": list(self.cv_auc)}


@dataclass(frozen=True, eq=False)
class LogRegResult:
    """The fitted probe on raw view features: ``logit = x @ weight + bias``."""

    weight: FloatArray
    bias: float
    summary: LogRegSummary


def _folds(
    y: LabelArray, groups: Sequence[str], cfg: LogRegConfig
) -> tuple[str, list[npt.NDArray[np.bool_]]]:
    fams = sorted(set(groups))
    if len(fams) >= 3:
        # families are dealt round-robin into at most `cfg.folds` held-out groups
        g = np.asarray(groups)
        held = [fams[i :: cfg.folds] for i in range(min(cfg.folds, len(fams)))]
        masks = [np.isin(g, part) for part in held]
        kind = "leave_one_family_out" if len(held) == len(fams) else "group_k_fold"
        return kind, [m for m in masks if len(set(y[m])) == 2]
    rng = np.random.default_rng(cfg.seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0, 1):
        idx = rng.permutation(np.flatnonzero(y == label))
        fold[idx] = np.arange(len(idx)) % cfg.folds
    return "stratified_k_fold", [fold == k for k in range(cfg.folds)]


def _row_space(
    z: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Coordinates of the rows in an orthonormal basis of their span, and the basis.

    From the eigen-decomposition of the (n, n) Gram matrix, much cheaper than an SVD
    of the (n, d) matrix when n << d; directions with a negligible eigenvalue (the
    centring removes one) are dropped.
    """
    evals, evecs = np.linalg.eigh(z @ z.T)
    keep = evals > evals.max() * 1e-10
    sv = np.sqrt(evals[keep])
    coords = evecs[:, keep] * sv
    basis = (evecs[:, keep] / sv).T @ z  # (r, d), orthonormal rows
    return coords, basis


def _fit(x: FloatArray, y: LabelArray, c: float, cfg: LogRegConfig) -> Any:
    from sklearn.linear_model import LogisticRegression  # training-only dependency

    model = LogisticRegression(
        C=c, class_weight="balanced", max_iter=cfg.max_iter, tol=1e-4
    )
    return model.fit(x, y)


def train_logreg_cv(
    x: FloatArray,
    y: LabelArray,
    groups: Sequence[str] = (),
    config: LogRegConfig | None = None,
) -> LogRegResult:
    """Fit the standardised, class-balanced logistic probe with C by grouped CV.

    Args:
        x: (n, d) view features.
        y: (n,) labels, 1 = fake.
        groups: n family names (grouped CV); empty: stratified folds.
        config: Hyper-parameters.

    Returns:
        Weight and bias on the raw view features, and the selection summary.

    Raises:
        InvalidInputError: Bad shapes, one class only, or non-finite input.
    """
    cfg = config or LogRegConfig()
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.int64)
    if xa.ndim != 2 or ya.shape != (xa.shape[0],) or set(np.unique(ya)) != {0, 1}:
        raise InvalidInputError(f"need (n, d) x and both labels, got {xa.shape}")
    if not np.isfinite(xa).all():
        raise InvalidInputError("x must be finite")
    mean = xa.mean(axis=0)
    std = np.maximum(xa.std(axis=0), _MIN_STD)
    z = (xa - mean) / std
    scale = 64.0 / xa.shape[1]
    rows: npt.NDArray[np.float64] | None = None
    if z.shape[0] < z.shape[1]:
        z, rows = _row_space(z)
    cv, masks = _folds(ya, groups or ("all",) * len(ya), cfg)
    aucs: list[float] = []
    for c in cfg.c_grid:
        fold_aucs = []
        for held in masks:
            if len(set(ya[~held])) < 2:
                continue
            model = _fit(z[~held], ya[~held], c * scale, cfg)
            fold_aucs.append(roc_auc(ya[held], model.decision_function(z[held])))
        aucs.append(float(np.mean(fold_aucs)) if fold_aucs else 0.5)
        logger.info("logreg C=%g (%s): mean held-out AUC %.4f", c, cv, aucs[-1])
    best = cfg.c_grid[int(np.argmax(aucs))]
    model = _fit(z, ya, best * scale, cfg)
    w_std = model.coef_.reshape(-1).astype(np.float64)
    if rows is not None:
        w_std = rows.T @ w_std
    weight = (w_std / std).astype(np.float32)
    bias = float(model.intercept_[0] - np.dot(mean / std, w_std))
    return LogRegResult(weight, bias, LogRegSummary(best, cv, tuple(aucs)))
