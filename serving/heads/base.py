"""Domain: what every detector head offers, and the labelled feature set heads train on."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LabeledFeatures:
    """Features with labels, as heads consume them.

    Attributes:
        x: (n, width) float32 flat feature rows (`serving.scoring.views`), raw.
        y: (n,) int64 labels, 1 = fake (AI-generated), 0 = real.
        ids: n image identifiers (relative paths); the kNN head returns them as evidence.
        groups: n generator-family names, for model selection grouped by family
            (empty when unknown).
    """

    x: FloatArray
    y: npt.NDArray[np.int64]
    ids: tuple[str, ...] = field(default=())
    groups: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.x.ndim != 2 or self.y.shape != (self.x.shape[0],):
            raise InvalidInputError(
                f"x {self.x.shape} and y {self.y.shape} do not match"
            )
        if self.ids and len(self.ids) != self.x.shape[0]:
            raise InvalidInputError(f"{len(self.ids)} ids for {self.x.shape[0]} rows")
        if self.groups and len(self.groups) != self.x.shape[0]:
            raise InvalidInputError(f"{len(self.groups)} groups for {len(self.x)} rows")


class Head(Protocol):
    """A detector head: higher score = more likely AI-generated."""

    name: str

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Fit on `train`; `val` is for early stopping / model selection only."""
        ...

    def score(self, x: FloatArray) -> FloatArray:
        """Score (n, width) flat feature rows (numpy path); returns (n,) float32."""
        ...

    def save(self, directory: Path) -> dict[str, Any]:
        """Write weights (safetensors / npz / JSON) into `directory`.

        Returns:
            JSON-serialisable parameters for the artifact manifest (dims, k,
            normalisation, hyper-parameters, training summary).
        """
        ...
