"""Domain: novelty, an image unlike every exemplar of both kNN banks, in pure numpy.

An image's *bank similarity* is its largest cosine similarity to any exemplar of
either bank (real or fake). On the calibration split, the `quantile` (e.g. 1 %) of
these similarities is the novelty threshold: an image whose bank similarity is below
it looks like fewer than `quantile` of the calibration images, so its kNN evidence is
weak whichever way the score points. Such an image is answered ``uncertain`` with the
reason `REASON_NOVEL`; the other labels and probabilities are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError
from serving.scoring.calibration import LABEL_UNCERTAIN

REASON_NOVEL: Final = "novel"
DEFAULT_QUANTILE: Final = 0.01
FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Novelty:
    """The calibrated novelty threshold (stored in the artifact manifest).

    Attributes:
        threshold: Bank similarity (cosine) below which an image is novel.
        quantile: The calibration-split quantile level `threshold` was set at.
        n_cal: Number of calibration images it was set on.
    """

    threshold: float
    quantile: float
    n_cal: int

    def __post_init__(self) -> None:
        if not 0.0 < self.quantile < 1.0 or not np.isfinite(self.threshold):
            raise InvalidInputError(f"bad novelty record {self}")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> Novelty:
        """Inverse of `to_dict`.

        Raises:
            InvalidInputError: Missing or malformed fields.
        """
        try:
            return cls(
                float(doc["threshold"]), float(doc["quantile"]), int(doc["n_cal"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"bad novelty record {doc!r}: {exc}") from exc


def _similarities(bank_similarity: npt.ArrayLike) -> npt.NDArray[np.float64]:
    s = np.asarray(bank_similarity, dtype=np.float64).reshape(-1)
    if not np.isfinite(s).all():
        raise InvalidInputError("bank similarities must be finite")
    return s


def fit_novelty(
    bank_similarity: npt.ArrayLike, quantile: float = DEFAULT_QUANTILE
) -> Novelty:
    """Set the novelty threshold on the calibration split.

    Args:
        bank_similarity: (n,) each calibration image's largest cosine similarity to
            either bank (never the test split).
        quantile: Level in (0, 1); the threshold is the lower empirical quantile
            (an order statistic, so the result does not depend on input order).

    Raises:
        InvalidInputError: Empty or non-finite input, or `quantile` outside (0, 1).
    """
    if not 0.0 < quantile < 1.0:
        raise InvalidInputError(f"quantile must be in (0, 1), got {quantile}")
    s = _similarities(bank_similarity)
    if s.size == 0:
        raise InvalidInputError("no calibration similarities")
    threshold = float(np.quantile(s, quantile, method="lower"))
    return Novelty(threshold, quantile, int(s.size))


def novelty_reasons(
    novelty: Novelty | None, bank_similarity: npt.ArrayLike
) -> list[tuple[str, ...]]:
    """Per image, the reasons to answer ``uncertain`` (``("novel",)`` or none).

    Args:
        novelty: The manifest's threshold; None (old artifacts) turns novelty off.
        bank_similarity: (n,) each image's largest cosine similarity to either bank.
    """
    s = _similarities(bank_similarity)
    if novelty is None:
        return [() for _ in range(s.size)]
    return [(REASON_NOVEL,) if v < novelty.threshold else () for v in s]


def apply_reasons(
    labels: npt.ArrayLike, reasons: Sequence[tuple[str, ...]]
) -> npt.NDArray[np.str_]:
    """Labels with every image that has a reason turned ``uncertain``.

    Raises:
        InvalidInputError: `labels` and `reasons` differ in length.
    """
    out = np.asarray(labels, dtype=np.str_).reshape(-1).astype(object)
    if out.size != len(reasons):
        raise InvalidInputError(f"{out.size} labels, {len(reasons)} reasons")
    for i, why in enumerate(reasons):
        if why:
            out[i] = LABEL_UNCERTAIN
    result: npt.NDArray[np.str_] = out.astype(np.str_)
    return result
