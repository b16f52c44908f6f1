"""Adapter: the UnivFD linear-probe head (trained in torch, scored in numpy).

UnivFD feeds the probe raw (unnormalised) CLIP features; so do we, in training and
in `score`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from safetensors.numpy import load_file, save_file
from torch import nn

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.heads.base import FloatArray, LabeledFeatures
from serving.scoring.probe import probe_logit
from serving.training.linear import (
    LinearProbeConfig,
    LinearProbeSummary,
    train_linear_probe,
)

WEIGHTS_FILE: Final = "linear_probe.safetensors"


class LinearProbeHead:
    """``Linear(d, 1)`` on raw features; `score` returns the logit.

    Args:
        config: Trainer hyper-parameters (UnivFD defaults when None).
    """

    name: str = "linear_probe"

    def __init__(self, config: LinearProbeConfig | None = None) -> None:
        self.config = config or LinearProbeConfig()
        self._weight: FloatArray | None = None
        self._bias = 0.0
        self.summary: LinearProbeSummary | None = None

    @classmethod
    def from_weights(cls, weight: FloatArray, bias: float) -> LinearProbeHead:
        """Wrap existing weights (e.g. UnivFD's released ``fc_weights.pth``, converted).

        Args:
            weight: (d,) or (1, d) weight.
            bias: The bias.
        """
        head = cls()
        head._weight = np.asarray(weight, dtype=np.float32).reshape(-1)
        head._bias = float(bias)
        return head

    def _w(self) -> FloatArray:
        if self._weight is None:
            raise InvalidInputError("the linear-probe head is not fitted")
        return self._weight

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Train on `train`, early-stopping on `val` accuracy."""
        result = train_linear_probe(train.x, train.y, val.x, val.y, self.config)
        self._weight, self._bias, self.summary = (
            result.weight,
            result.bias,
            result.summary,
        )

    def score(self, x: FloatArray) -> FloatArray:
        """Logits (n,) float32 of (n, d) raw features (numpy path)."""
        return probe_logit(x, self._w(), self._bias)

    def to_torch(self) -> nn.Linear:
        """The same probe as an eval-mode ``nn.Linear`` (parity checks, export)."""
        w = self._w()
        probe = nn.Linear(w.shape[0], 1)
        with torch.no_grad():
            probe.weight.copy_(torch.from_numpy(w.copy()).reshape(1, -1))
            probe.bias.fill_(self._bias)
        return probe.eval()

    def save(self, directory: Path) -> dict[str, Any]:
        """Write ``weight`` (1, d) and ``bias`` (1,) as safetensors into `directory`.

        Returns:
            Manifest parameters: dim, normalisation, file, hyper-parameters, summary.
        """
        w = self._w()
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {
            "weight": w.reshape(1, -1),
            "bias": np.array([self._bias], np.float32),
        }
        save_file(tensors, str(directory / WEIGHTS_FILE))
        return {
            "head": self.name,
            "dim": int(w.shape[0]),
            "normalisation": "none",
            "files": {"weights": WEIGHTS_FILE},
            "config": self.config.to_dict(),
            "training": self.summary.to_dict() if self.summary else None,
        }

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any]) -> LinearProbeHead:
        """Rebuild a head written by `save`.

        Raises:
            ArtifactMismatchError: The file is missing or disagrees with `params`.
        """
        try:
            dim = int(params["dim"])
            tensors = load_file(str(directory / params["files"]["weights"]))
            weight, bias = tensors["weight"], tensors["bias"]
        except (KeyError, TypeError, ValueError, OSError) as exc:
            raise ArtifactMismatchError(f"linear probe in {directory}: {exc}") from exc
        if weight.shape != (1, dim) or bias.shape != (1,):
            raise ArtifactMismatchError(
                f"probe weight {weight.shape}, expected (1, {dim})"
            )
        return cls.from_weights(weight, float(bias[0]))
