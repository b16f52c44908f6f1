"""Domain: score drift, the population stability index (PSI) against a reference.

The reference is the decision's calibrated probability on the calibration split,
binned at its own deciles (`fit_score_reference`): bin edges plus the share of
calibration images in each bin. A window of served scores is binned the same way and
``PSI = sum((p - q) * ln(p / q))`` over bins, with both shares floored at `EPSILON`
so that an empty bin gives a large but finite value. Rules of thumb: < 0.1 stable,
0.1-0.25 moderate shift, > 0.25 a major shift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError

DEFAULT_BINS: Final = 10
EPSILON: Final = 1e-4


@dataclass(frozen=True)
class ScoreReference:
    """Binned reference distribution of decision scores (stored in the manifest).

    Attributes:
        edges: Inner bin edges, increasing; bins are ``(-inf, e0), [e0, e1) ...
            [e_last, inf)``, so there are ``len(edges) + 1`` bins.
        proportions: Share of calibration scores per bin; sums to 1.
        score: What was binned (``probability``: the decision's calibrated one).
        n_cal: Number of calibration scores.
    """

    edges: tuple[float, ...]
    proportions: tuple[float, ...]
    score: str
    n_cal: int

    def __post_init__(self) -> None:
        e, p = np.asarray(self.edges), np.asarray(self.proportions)
        if p.size != e.size + 1 or (np.diff(e) <= 0).any() or (p < 0).any():
            raise InvalidInputError(f"bad score reference {self}")
        if not np.isclose(p.sum(), 1.0):
            raise InvalidInputError("score reference proportions must sum to 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifest)."""
        return {
            "edges": list(self.edges),
            "proportions": list(self.proportions),
            "score": self.score,
            "n_cal": self.n_cal,
        }

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> ScoreReference:
        """Inverse of `to_dict`.

        Raises:
            InvalidInputError: Missing or malformed fields.
        """
        try:
            return cls(
                tuple(float(v) for v in doc["edges"]),
                tuple(float(v) for v in doc["proportions"]),
                str(doc["score"]),
                int(doc["n_cal"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"bad score reference {doc!r}: {exc}") from exc


def _scores(scores: npt.ArrayLike) -> npt.NDArray[np.float64]:
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise InvalidInputError("scores must be finite")
    return s


def bin_shares(
    edges: tuple[float, ...], scores: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """Share of `scores` in each bin of `edges` (see `ScoreReference`)."""
    s = _scores(scores)
    if s.size == 0:
        raise InvalidInputError("no scores to bin")
    idx = np.searchsorted(np.asarray(edges, dtype=np.float64), s, side="right")
    counts = np.bincount(idx, minlength=len(edges) + 1)
    shares: npt.NDArray[np.float64] = counts / s.size
    return shares


def fit_score_reference(
    scores: npt.ArrayLike, n_bins: int = DEFAULT_BINS, score: str = "probability"
) -> ScoreReference:
    """Bin the calibration split's decision scores at their own quantiles.

    Tied quantiles (a saturated calibrator) merge bins, so there may be fewer than
    `n_bins`.

    Args:
        scores: (n,) decision scores of the calibration split.
        n_bins: Wanted number of bins, >= 2.
        score: Name of what was binned, recorded with it.

    Raises:
        InvalidInputError: Fewer than two scores or bins, or non-finite scores.
    """
    s = _scores(scores)
    if n_bins < 2 or s.size < 2:
        raise InvalidInputError(f"need >= 2 bins and scores, got {n_bins}, {s.size}")
    inner = np.quantile(s, np.arange(1, n_bins) / n_bins, method="lower")
    edges = tuple(float(e) for e in np.unique(inner) if e > s.min())
    shares = bin_shares(edges, s)
    return ScoreReference(edges, tuple(float(v) for v in shares), score, int(s.size))


def psi(reference: ScoreReference, scores: npt.ArrayLike) -> float:
    """Population stability index of `scores` against `reference` (>= 0).

    Raises:
        InvalidInputError: No scores, or non-finite scores.
    """
    p = np.maximum(bin_shares(reference.edges, scores), EPSILON)
    q = np.maximum(np.asarray(reference.proportions, dtype=np.float64), EPSILON)
    return float(np.sum((p - q) * np.log(p / q)))
