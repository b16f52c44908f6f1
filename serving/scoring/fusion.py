"""Domain: a fused decision score from several heads' raw scores.

Each member head's score is standardised with the mean and standard deviation it has
on the calibration split, and the fused score is the mean of the standardised scores.
Heads err on different images (a linear probe on one view, nearest neighbours on
another, a learned per-block weighting), and on generator families held out of
training the average of standardised scores ranked images better than either head
alone (docs/benchmarks.md, "decision"). No weights are learned, so nothing here can
overfit the calibration split; the decision's calibration is fitted on top like any
head's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError
from serving.scoring.calibration import Calibration

FloatArray = npt.NDArray[np.float32]
FUSION: Final = "fusion"
_MIN_STD: Final = 1e-6


@dataclass(frozen=True)
class Fusion:
    """Mean of standardised member scores.

    Attributes:
        members: Head instance names, in a fixed order.
        means: Each member's calibration-split score mean.
        stds: Each member's calibration-split score standard deviation.
    """

    members: tuple[str, ...]
    means: tuple[float, ...]
    stds: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.members or not len(self.members) == len(self.means) == len(
            self.stds
        ):
            raise InvalidInputError(f"bad fusion {self}")

    def score(self, scores: Mapping[str, npt.ArrayLike]) -> FloatArray:
        """Fused (n,) float32 score from each member's (n,) raw scores.

        Raises:
            InvalidInputError: A member's scores are missing.
        """
        missing = [m for m in self.members if m not in scores]
        if missing:
            raise InvalidInputError(f"fusion needs the scores of {missing}")
        z = [
            (np.asarray(scores[m], dtype=np.float64).reshape(-1) - mu) / sd
            for m, mu, sd in zip(self.members, self.means, self.stds, strict=True)
        ]
        fused: FloatArray = np.mean(z, axis=0).astype(np.float32)
        return fused

    def to_dict(self) -> dict[str, Any]:
        """JSON form (manifest)."""
        return {
            "members": list(self.members),
            "means": list(self.means),
            "stds": list(self.stds),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Fusion:
        """Inverse of `to_dict`.

        Raises:
            InvalidInputError: Missing or malformed fields.
        """
        try:
            return cls(
                tuple(str(m) for m in doc["members"]),
                tuple(float(v) for v in doc["means"]),
                tuple(float(v) for v in doc["stds"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidInputError(f"bad fusion record {doc!r}: {exc}") from exc


def fit_fusion(scores: Mapping[str, npt.ArrayLike]) -> Fusion:
    """Standardisation statistics of each member's scores (calibration split).

    Args:
        scores: Member name -> (n,) raw scores on the calibration split.
    """
    members = tuple(sorted(scores))
    arrays = [np.asarray(scores[m], dtype=np.float64).reshape(-1) for m in members]
    return Fusion(
        members,
        tuple(float(a.mean()) for a in arrays),
        tuple(max(float(a.std()), _MIN_STD) for a in arrays),
    )


@dataclass(frozen=True)
class Decision:
    """What decides a verdict: one head's score, or a fusion of heads, calibrated.

    Attributes:
        name: The decision's name in the manifest (a head instance, or ``fusion``).
        calibration: Maps the decision score to a probability and a label.
        fusion: The fusion, when ``name == "fusion"``.
    """

    name: str
    calibration: Calibration
    fusion: Fusion | None = None

    @property
    def members(self) -> tuple[str, ...]:
        """The head instances whose scores the decision needs."""
        return self.fusion.members if self.fusion is not None else (self.name,)

    def score(self, per_head: Mapping[str, npt.ArrayLike]) -> FloatArray:
        """The raw decision score from each head's raw scores.

        Raises:
            InvalidInputError: A needed head's scores are missing.
        """
        if self.fusion is not None:
            return self.fusion.score(per_head)
        if self.name not in per_head:
            raise InvalidInputError(f"decision needs the scores of {self.name!r}")
        return np.asarray(per_head[self.name], dtype=np.float32).reshape(-1)
