"""Domain: per-domain, per-head evaluation results and their means (UnivFD protocol).

All metric values are fractions in [0, 1]; reports print them as percentages.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from serving.scoring.metrics import (
    accuracy_at,
    average_precision,
    check_labels_scores,
    roc_auc,
    tpr_at_fpr,
)

MEAN_ROW: str = "mean"
METRICS: tuple[str, ...] = (
    "ap",
    "auc",
    "acc",
    "real_acc",
    "fake_acc",
    "tpr_at_fpr1",
    "tpr_at_fpr5",
)


@dataclass(frozen=True)
class DomainResult:
    """Metrics of one head on one domain.

    Attributes:
        domain: Domain name (``mean`` for a mean row).
        head: Head name, e.g. ``ufd_linear``.
        n_real: Number of real images scored.
        n_fake: Number of fake images scored.
        ap: Average precision of the raw scores.
        auc: ROC AUC of the raw scores.
        acc: Accuracy at the deployed threshold on calibrated probabilities.
        real_acc: Accuracy on reals at that threshold (UFD ``r_acc``).
        fake_acc: Accuracy on fakes at that threshold (UFD ``f_acc``).
        tpr_at_fpr1: TPR with the threshold set on this domain's reals at FPR 1 %.
        tpr_at_fpr5: Same at FPR 5 %.
        threshold: The deployed probability threshold used for the accuracies.
    """

    domain: str
    head: str
    n_real: int
    n_fake: int
    ap: float
    auc: float
    acc: float
    real_acc: float
    fake_acc: float
    tpr_at_fpr1: float
    tpr_at_fpr5: float
    threshold: float


def evaluate_domain(
    domain: str,
    head: str,
    y: npt.ArrayLike,
    scores: npt.ArrayLike,
    probs: npt.ArrayLike,
    threshold: float,
) -> DomainResult:
    """Score one head on one domain.

    Args:
        domain: Domain name.
        head: Head name.
        y: (n,) labels, 1 = fake; both classes required.
        scores: (n,) raw head scores (AP, AUC and TPR@FPR use these).
        probs: (n,) calibrated probabilities (accuracies use these).
        threshold: Deployed probability threshold (from the calibration split).

    Returns:
        The domain's `DomainResult`.

    Raises:
        InvalidInputError: Inputs are malformed or a class is missing.
    """
    yi, s = check_labels_scores(y, scores)
    _, p = check_labels_scores(yi, probs)
    accs = accuracy_at(yi, p, threshold)
    n_fake = int(yi.sum())
    return DomainResult(
        domain=domain,
        head=head,
        n_real=int(yi.size - n_fake),
        n_fake=n_fake,
        ap=average_precision(yi, s),
        auc=roc_auc(yi, s),
        acc=accs.acc,
        real_acc=accs.real_acc,
        fake_acc=accs.fake_acc,
        tpr_at_fpr1=tpr_at_fpr(yi, s, 0.01),
        tpr_at_fpr5=tpr_at_fpr(yi, s, 0.05),
        threshold=float(threshold),
    )


def mean_row(results: list[DomainResult]) -> list[DomainResult]:
    """Unweighted mean over domains of every metric, one row per head (mAP etc.).

    Rows whose domain is already ``mean`` are ignored. Counts are summed; the
    threshold is kept when all domains share it, else NaN.

    Returns:
        One `DomainResult` with domain ``mean`` per head, in first-seen head order.
    """
    heads = dict.fromkeys(r.head for r in results if r.domain != MEAN_ROW)
    rows: list[DomainResult] = []
    for head in heads:
        rs = [r for r in results if r.head == head and r.domain != MEAN_ROW]
        means: dict[str, Any] = {
            m: float(np.mean([getattr(r, m) for r in rs])) for m in METRICS
        }
        thresholds = {r.threshold for r in rs}
        rows.append(
            DomainResult(
                domain=MEAN_ROW,
                head=head,
                n_real=sum(r.n_real for r in rs),
                n_fake=sum(r.n_fake for r in rs),
                threshold=rs[0].threshold if len(thresholds) == 1 else math.nan,
                **means,
            )
        )
    return rows
