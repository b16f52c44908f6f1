"""Adapter: the Santosh et al. MLP head (trained in torch, scored in numpy).

Inputs are standardised with the training mean/std before the first layer: raw
CLIP features are not normalised and their dimensions differ in scale, which
conditions the MLP badly. The mean/std live in the torch module (buffers) and in
the folded numpy weights, so both paths take raw features.

`save` writes two safetensors files: the folded numpy weights used by `score`
(``mlp_folded``) and the unfolded torch state dict (``mlp_state``) to rebuild the
torch model (`to_torch`) for parity checks or export.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.heads.base import FloatArray, LabeledFeatures
from serving.scoring.mlp import MlpParams, mlp_logit
from serving.training.mlp import (
    MlpDetector,
    MlpTrainConfig,
    MlpTrainingSummary,
    to_mlp_params,
    train_mlp,
)

FILES: Final = {"folded": "mlp_folded.safetensors", "state": "mlp_state.safetensors"}
# RuntimeError: torch's load_state_dict on a state dict of another architecture.
_LOAD_ERRORS: Final = (
    KeyError,
    TypeError,
    ValueError,
    OSError,
    RuntimeError,
    InvalidInputError,
)


def _params_to_tensors(p: MlpParams) -> dict[str, FloatArray]:
    tensors = {"input_mean": p.input_mean, "input_std": p.input_std}
    for i, (w, b) in enumerate(zip(p.hidden_weights, p.hidden_biases, strict=True)):
        tensors[f"hidden.{i}.weight"], tensors[f"hidden.{i}.bias"] = w, b
    tensors["out.weight"] = p.out_weight
    tensors["out.bias"] = np.array([p.out_bias], dtype=np.float32)
    return tensors


def _tensors_to_params(
    t: dict[str, FloatArray], n_hidden: int, slope: float
) -> MlpParams:
    return MlpParams(
        input_mean=t["input_mean"],
        input_std=t["input_std"],
        hidden_weights=tuple(t[f"hidden.{i}.weight"] for i in range(n_hidden)),
        hidden_biases=tuple(t[f"hidden.{i}.bias"] for i in range(n_hidden)),
        out_weight=t["out.weight"],
        out_bias=float(t["out.bias"][0]),
        negative_slope=slope,
    )


class MlpHead:
    """The CVaR-AUC-SAM MLP; `score` returns the logit of raw features.

    Args:
        config: Trainer hyper-parameters (Robust_DM defaults when None).
    """

    name: str = "mlp"

    def __init__(self, config: MlpTrainConfig | None = None) -> None:
        self.config = config or MlpTrainConfig()
        self._params: MlpParams | None = None
        self._state: dict[str, torch.Tensor] = {}
        self.summary: MlpTrainingSummary | None = None

    def _p(self) -> MlpParams:
        if self._params is None:
            raise InvalidInputError("the MLP head is not fitted")
        return self._params

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Train on `train`; keep the epoch with the best ROC-AUC on `val`."""
        result = train_mlp(train.x, train.y, val.x, val.y, self.config)
        self._params = to_mlp_params(result.model)
        self._state = {
            k: v.detach().clone() for k, v in result.model.state_dict().items()
        }
        self.summary = result.summary

    def score(self, x: FloatArray) -> FloatArray:
        """Logits (n,) float32 of (n, d) raw features (numpy path, BN folded)."""
        return mlp_logit(x, self._p())

    def to_torch(self) -> MlpDetector:
        """The unfolded torch model in eval mode (parity checks, export)."""
        cfg = self.config
        model = MlpDetector(
            self._p().dim, cfg.n_hidden, cfg.dropout, cfg.negative_slope
        )
        model.load_state_dict(self._state)
        return model.eval()

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the folded and the unfolded weights (safetensors) into `directory`.

        Returns:
            Manifest parameters: dim, layers, normalisation, files, config, summary.
        """
        params = self._p()
        directory.mkdir(parents=True, exist_ok=True)
        save_numpy(_params_to_tensors(params), str(directory / FILES["folded"]))
        save_torch(self._state, str(directory / FILES["state"]))
        return {
            "head": self.name,
            "dim": params.dim,
            "n_hidden": len(params.hidden_weights),
            "negative_slope": params.negative_slope,
            "normalisation": "standardise (training mean/std, stored in the weights)",
            "files": dict(FILES),
            "config": self.config.to_dict(),
            "training": self.summary.to_dict() if self.summary else None,
        }

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any]) -> MlpHead:
        """Rebuild a head written by `save`.

        Raises:
            ArtifactMismatchError: Files missing or disagreeing with `params`.
        """
        try:
            cfg = dict(params["config"])
            head = cls(MlpTrainConfig(**{**cfg, "betas": tuple(cfg["betas"])}))
            folded = load_numpy(str(directory / params["files"]["folded"]))
            n_hidden, slope = int(params["n_hidden"]), float(params["negative_slope"])
            head._params = _tensors_to_params(folded, n_hidden, slope)
            head._state = load_torch(str(directory / params["files"]["state"]))
            head.to_torch()  # checks the state dict against the architecture
        except _LOAD_ERRORS as exc:
            raise ArtifactMismatchError(f"MLP head in {directory}: {exc}") from exc
        if head._p().dim != int(params["dim"]):
            raise ArtifactMismatchError(f"MLP dim {head._p().dim} != {params['dim']}")
        return head
