"""Application: what the served model is watched against, set on the calibration split.

Fitted at training time next to the calibration and stored in the artifact manifest:

- the novelty threshold (`serving.scoring.novelty`): a low quantile of the
  calibration images' largest cosine similarity to the kNN banks (absent when no kNN
  head is trained);
- the score reference for drift (`serving.scoring.drift`): the decision's calibrated
  probabilities on the calibration split, binned at their deciles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from serving.heads.base import FloatArray, Head
from serving.heads.knn import KnnHead
from serving.scoring.calibration import calibrate
from serving.scoring.drift import DEFAULT_BINS, ScoreReference, fit_score_reference
from serving.scoring.fusion import Decision
from serving.scoring.novelty import DEFAULT_QUANTILE, Novelty, fit_novelty


@dataclass(frozen=True)
class References:
    """The manifest's monitoring references (either may be absent)."""

    novelty: Novelty | None = None
    score_reference: ScoreReference | None = None


def knn_head(heads: Mapping[str, Head]) -> KnnHead | None:
    """The served kNN head (the first one, as the detector's evidence), if any."""
    return next((h for h in heads.values() if isinstance(h, KnnHead)), None)


def fit_references(
    heads: Mapping[str, Head],
    cal_x: FloatArray,
    decision: Decision,
    quantile: float = DEFAULT_QUANTILE,
    n_bins: int = DEFAULT_BINS,
) -> References:
    """Novelty threshold and drift reference from the calibration split.

    Args:
        heads: The fitted heads.
        cal_x: (n, width) flat feature rows of the **calibration** split.
        decision: The fitted decision rule.
        quantile: Novelty quantile level of the bank similarities.
        n_bins: Bins of the drift reference.
    """
    knn = knn_head(heads)
    novelty = (
        fit_novelty(knn.bank_similarity(cal_x), quantile) if knn is not None else None
    )
    per_head = {n: heads[n].score(cal_x) for n in decision.members}
    probs = calibrate(decision.calibration, decision.score(per_head))
    return References(novelty, fit_score_reference(probs, n_bins))
