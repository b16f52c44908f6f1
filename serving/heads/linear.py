"""Adapter: the UnivFD linear-probe head (trained in torch or sklearn, scored in numpy).

The probe reads its `FeatureView` of the flat feature rows (by default every block's
CLS token, each L2-normalised). Two training recipes:

- ``logreg_cv`` (default): standardised, class-balanced logistic regression with the
  L2 strength chosen by cross-validation grouped by generator family
  (`serving.training.logistic`);
- ``univfd``: UnivFD's own trainer (BCE, AdamW, early stopping on accuracy).

Either way the result is ``logit = view(x) @ w + b``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
from safetensors.numpy import load_file, save_file

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.heads.base import FloatArray, LabeledFeatures
from serving.scoring.probe import probe_logit
from serving.scoring.views import FeatureView, ViewError
from serving.training.configs import LinearProbeConfig
from serving.training.logistic import LogRegConfig

if TYPE_CHECKING:
    from torch import nn

WEIGHTS_FILE: Final = "linear_probe.safetensors"
Recipe = Literal["logreg_cv", "univfd"]
RECIPES: Final[tuple[Recipe, ...]] = ("logreg_cv", "univfd")


class LinearProbeHead:
    """``Linear(d, 1)`` on a view of the features; `score` returns the logit.

    Args:
        view: The part of the flat feature rows the probe reads.
        config: UnivFD trainer hyper-parameters (recipe ``univfd``).
        recipe: ``logreg_cv`` or ``univfd`` (module docstring).
        logreg: Hyper-parameters of recipe ``logreg_cv``.
    """

    name: str = "linear_probe"

    def __init__(
        self,
        view: FeatureView,
        config: LinearProbeConfig | None = None,
        recipe: Recipe = "logreg_cv",
        logreg: LogRegConfig | None = None,
    ) -> None:
        if recipe not in RECIPES:
            raise InvalidInputError(f"recipe must be one of {RECIPES}, got {recipe!r}")
        self.view = view
        self.config = config or LinearProbeConfig()
        self.recipe = recipe
        self.logreg = logreg or LogRegConfig()
        self._weight: FloatArray | None = None
        self._bias = 0.0
        self.summary: dict[str, Any] | None = None

    @classmethod
    def from_weights(
        cls, view: FeatureView, weight: FloatArray, bias: float
    ) -> LinearProbeHead:
        """Wrap existing weights (e.g. UnivFD's released ``fc_weights.pth``, converted).

        Args:
            view: The view the weights apply to (its ``dim`` = the weight's length).
            weight: (d,) or (1, d) weight.
            bias: The bias.

        Raises:
            InvalidInputError: The weight's length is not the view's width.
        """
        head = cls(view)
        head._weight = np.asarray(weight, dtype=np.float32).reshape(-1)
        if head._weight.shape[0] != view.dim:
            raise InvalidInputError(f"weight {head._weight.shape} for view {view.dim}")
        head._bias = float(bias)
        return head

    def _w(self) -> FloatArray:
        if self._weight is None:
            raise InvalidInputError("the linear-probe head is not fitted")
        return self._weight

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Train on `train`.

        Recipe ``logreg_cv`` selects C by CV grouped by `train.groups` and ignores
        `val`; recipe ``univfd`` early-stops on `val` accuracy.
        """
        x = self.view.apply(train.x)
        if self.recipe == "logreg_cv":
            from serving.training.logistic import train_logreg_cv

            fitted = train_logreg_cv(x, train.y, train.groups, self.logreg)
            self._weight, self._bias = fitted.weight, fitted.bias
            self.summary = fitted.summary.to_dict()
            return
        from serving.training.linear import train_linear_probe

        xv = self.view.apply(val.x)
        result = train_linear_probe(x, train.y, xv, val.y, self.config)
        self._weight, self._bias = result.weight, result.bias
        self.summary = result.summary.to_dict()

    def score(self, x: FloatArray) -> FloatArray:
        """Logits (n,) float32 of (n, width) flat feature rows (numpy path)."""
        return probe_logit(self.view.apply(x), self._w(), self._bias)

    def to_torch(self) -> nn.Linear:
        """The same probe (on view features) as an eval-mode ``nn.Linear``."""
        import torch
        from torch import nn

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
        config = self.logreg if self.recipe == "logreg_cv" else self.config
        return {
            "head": self.name,
            "dim": int(w.shape[0]),
            "view": self.view.to_dict(),
            "recipe": self.recipe,
            "files": {"weights": WEIGHTS_FILE},
            "config": config.to_dict(),
            "training": self.summary,
        }

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any]) -> LinearProbeHead:
        """Rebuild a head written by `save`.

        Raises:
            ArtifactMismatchError: The file is missing or disagrees with `params`.
        """
        try:
            dim = int(params["dim"])
            view = FeatureView.from_dict(params["view"])
            tensors = load_file(str(directory / params["files"]["weights"]))
            weight, bias = tensors["weight"], tensors["bias"]
        except (KeyError, TypeError, ValueError, OSError, ViewError) as exc:
            raise ArtifactMismatchError(f"linear probe in {directory}: {exc}") from exc
        if weight.shape != (1, dim) or bias.shape != (1,) or view.dim != dim:
            raise ArtifactMismatchError(
                f"probe weight {weight.shape}, expected (1, {dim}) = view {view.dim}"
            )
        head = cls.from_weights(view, weight, float(bias[0]))
        head.recipe = params.get("recipe", "univfd")
        return head
