"""Adapter: the Santosh et al. MLP head (trained in torch, scored in numpy).

The head takes a `FeatureView` of the flat feature rows (the projected embedding, or
the per-block CLS tokens of the layer stack) and standardises it with the training
mean/std before the first layer: the dimensions differ in scale, which conditions
the MLP badly. The mean/std live in the torch module (buffers) and in the folded
numpy weights, so both paths take the view's output.

`save` writes two safetensors files: the folded numpy weights used by `score`
(``mlp_folded``) and the unfolded state dict (``mlp_state``) to rebuild the torch
model (`to_torch`) for parity checks or export. Scoring, saving and loading need no
torch: the trainer (`serving.training.mlp`) is imported inside `fit` / `to_torch`.

With generator families (``train.groups``) the head early-stops on a held-out
family rather than on `val` (`holdout_split`), then refits on all training rows for
the selected number of epochs: the stopping point is chosen for unseen generators.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.heads.base import FloatArray, LabeledFeatures
from serving.scoring.mlp import MlpParams, mlp_logit
from serving.scoring.views import FeatureView

if TYPE_CHECKING:
    from serving.training.mlp import MlpDetector, MlpTrainingSummary

LossName = Literal["cvar_auc", "bce"]
LabelArray = npt.NDArray[np.int64]

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


@dataclass(frozen=True)
class MlpTrainConfig:
    """Hyper-parameters of the MLP head and its trainer.

    Robust_DM defaults (batch 256) except: hidden width ``hidden_dim`` (256; None =
    the input width, Robust_DM's d -> d), optional input dropout, early stopping after
    ``patience`` epochs without a validation-AUC gain (None = all ``epochs``), and
    the held-out-family selection (``holdout_family``: None picks the largest fake
    family; ``refit``: retrain on all rows for the selected epochs).
    """

    epochs: int = 32
    batch_size: int = 256
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.01
    rho: float = 0.05
    loss: LossName = "cvar_auc"
    gamma: float = 0.1
    alpha: float = 0.8
    eta: float = 0.6
    p: float = 2.0
    eta_min: float = 1e-5
    n_hidden: int = 3
    hidden_dim: int | None = 256
    dropout: float = 0.335
    input_dropout: float = 0.0
    negative_slope: float = 0.01
    patience: int | None = 8
    refit: bool = True
    holdout_family: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.loss not in ("cvar_auc", "bce"):
            raise InvalidInputError(
                f"loss must be 'cvar_auc' or 'bce', got {self.loss!r}"
            )
        if self.epochs < 1 or self.batch_size < 2:
            raise InvalidInputError("need epochs >= 1 and batch_size >= 2")
        if (self.hidden_dim is not None and self.hidden_dim < 1) or (
            self.patience is not None and self.patience < 1
        ):
            raise InvalidInputError("need hidden_dim >= 1 and patience >= 1 (or None)")
        if not 0.0 <= self.input_dropout < 1.0 or not 0.0 <= self.dropout < 1.0:
            raise InvalidInputError("dropout probabilities must be in [0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> MlpTrainConfig:
        """Inverse of `to_dict` (fields missing from older manifests get defaults)."""
        return cls(**{**doc, "betas": tuple(doc.get("betas", cls.betas))})


@dataclass(frozen=True, eq=False)
class HoldoutSplit:
    """Training rows and early-stopping rows for one held-out generator family.

    Attributes:
        fit_x: Head inputs of the training rows outside the family.
        fit_y: Their labels.
        stop_x: Head inputs of the family's rows (training and validation), plus
            validation rows of a class the family lacks.
        stop_y: Their labels (both classes).
        family: The held-out family.
    """

    fit_x: FloatArray
    fit_y: LabelArray
    stop_x: FloatArray
    stop_y: LabelArray
    family: str


def _groups(data: LabeledFeatures) -> npt.NDArray[np.str_] | None:
    groups = tuple(getattr(data, "groups", ()) or ())
    if len(groups) != data.x.shape[0]:
        return None
    return np.asarray(groups, dtype=str)


def holdout_split(
    train: LabeledFeatures,
    val: LabeledFeatures,
    apply: Callable[[FloatArray], FloatArray],
    family: str | None = None,
) -> HoldoutSplit | None:
    """Hold one generator family of `train` out for early stopping.

    Args:
        train: Training rows; ``train.groups`` (generator family per row) if any.
        val: Validation rows (``groups`` optional); they add the family's rows and,
            when the family has one class only, the rows of the other class.
        apply: The head's view (flat rows -> head inputs).
        family: Family to hold out; None picks the family with the most fake
            training rows (ties: first by name).

    Returns:
        The split, or None when there are no groups, fewer than two families with
        fakes, or no way to give the stopping rows both classes.

    Raises:
        InvalidInputError: `family` is not a family of `train`.
    """
    groups = _groups(train)
    if groups is None:
        return None
    fake_families = sorted(set(groups[train.y == 1].tolist()))
    if family is not None and family not in set(groups.tolist()):
        raise InvalidInputError(f"hold-out family {family!r} not in the training set")
    if family is None:
        if len(fake_families) < 2:
            return None
        counts = {f: int(((groups == f) & (train.y == 1)).sum()) for f in fake_families}
        family = min(fake_families, key=lambda f: (-counts[f], f))
    out = groups == family
    if out.all():
        return None
    val_groups = _groups(val)
    val_in = (
        val_groups == family if val_groups is not None else np.zeros(len(val.y), bool)
    )
    stop_y = np.concatenate([train.y[out], val.y[val_in]])
    missing = [c for c in (0, 1) if not (stop_y == c).any()]
    val_extra = ~val_in & np.isin(val.y, missing)
    stop_y = np.concatenate([stop_y, val.y[val_extra]])
    if np.unique(stop_y).size < 2:
        return None
    stop_x = np.concatenate(
        [apply(train.x[out]), apply(val.x[val_in]), apply(val.x[val_extra])]
    )
    return HoldoutSplit(
        apply(train.x[~out]), train.y[~out], stop_x, stop_y.astype(np.int64), family
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
    """The CVaR-AUC-SAM MLP on a view of the flat features; `score` returns the logit.

    Args:
        view: The part of the flat feature row the head consumes.
        config: Trainer hyper-parameters (defaults when None).

    Attributes:
        summary: Training summary of the run that chose the epoch (on the held-out
            family when groups were given, else on `val`).
        holdout_family: The family held out for early stopping, if any.
        refit_epochs: Epochs of the final refit on all rows (None without refit).
    """

    name: str = "mlp"

    def __init__(self, view: FeatureView, config: MlpTrainConfig | None = None) -> None:
        self.view = view
        self.config = config or MlpTrainConfig()
        self._params: MlpParams | None = None
        self._state: dict[str, npt.NDArray[Any]] = {}
        self.summary: MlpTrainingSummary | None = None
        self.holdout_family: str | None = None
        self.refit_epochs: int | None = None

    def _p(self) -> MlpParams:
        if self._params is None:
            raise InvalidInputError("the MLP head is not fitted")
        return self._params

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Train on `train`; keep the epoch with the best held-out ROC-AUC.

        With ``train.groups`` the largest fake family (or ``config.holdout_family``)
        is held out for early stopping and the head is then refit on all of `train`
        for the selected number of epochs (``config.refit``); otherwise the epoch
        with the best ROC-AUC on `val` is kept.
        """
        from serving.training.mlp import to_mlp_params, train_mlp

        cfg = self.config
        split = holdout_split(train, val, self.view.apply, cfg.holdout_family)
        self.holdout_family, self.refit_epochs = None, None
        if split is None:
            x, xv = self.view.apply(train.x), self.view.apply(val.x)
            result = train_mlp(x, train.y, xv, val.y, cfg)
            model, self.summary = result.model, result.summary
        else:
            result = train_mlp(
                split.fit_x, split.fit_y, split.stop_x, split.stop_y, cfg
            )
            model, self.summary = result.model, result.summary
            self.holdout_family = split.family
            if cfg.refit:
                self.refit_epochs = result.summary.best_epoch + 1
                x = self.view.apply(train.x)
                model = train_mlp(
                    x, train.y, config=cfg, epochs=self.refit_epochs
                ).model
        self._params = to_mlp_params(model)
        self._state = {
            k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()
        }

    def score(self, x: FloatArray) -> FloatArray:
        """Logits (n,) float32 of (n, layout.width) flat rows (numpy, BN folded)."""
        return mlp_logit(self.view.apply(x), self._p())

    def to_torch(self) -> MlpDetector:
        """The unfolded torch model in eval mode; it takes the view's output."""
        import torch

        from serving.training.mlp import build_mlp

        model = build_mlp(self._p().dim, self.config)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in self._state.items()})
        return model.eval()

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the folded and the unfolded weights (safetensors) into `directory`.

        Returns:
            Manifest parameters: view, dim, layers, normalisation, files, config,
            training summary and hold-out selection.
        """
        params = self._p()
        directory.mkdir(parents=True, exist_ok=True)
        save_numpy(_params_to_tensors(params), str(directory / FILES["folded"]))
        save_numpy(self._state, str(directory / FILES["state"]))
        return {
            "head": self.name,
            "view": self.view.to_dict(),
            "dim": params.dim,
            "hidden_dim": int(params.hidden_weights[0].shape[0])
            if params.hidden_weights
            else None,
            "n_hidden": len(params.hidden_weights),
            "negative_slope": params.negative_slope,
            "normalisation": "standardise (training mean/std, stored in the weights)",
            "files": dict(FILES),
            "config": self.config.to_dict(),
            "training": self.summary.to_dict() if self.summary else None,
            "holdout_family": self.holdout_family,
            "refit_epochs": self.refit_epochs,
        }

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any]) -> MlpHead:
        """Rebuild a head written by `save` (no torch needed).

        Raises:
            ArtifactMismatchError: Files missing or disagreeing with `params`.
        """
        try:
            view = FeatureView.from_dict(params["view"])
            head = cls(view, MlpTrainConfig.from_dict(dict(params["config"])))
            folded = load_numpy(str(directory / params["files"]["folded"]))
            n_hidden, slope = int(params["n_hidden"]), float(params["negative_slope"])
            head._params = _tensors_to_params(folded, n_hidden, slope)
            head._state = load_numpy(str(directory / params["files"]["state"]))
            head.holdout_family = params.get("holdout_family")
            head.refit_epochs = params.get("refit_epochs")
        except _LOAD_ERRORS as exc:
            raise ArtifactMismatchError(f"MLP head in {directory}: {exc}") from exc
        dim = head._p().dim
        if dim != int(params["dim"]) or dim != view.dim:
            raise ArtifactMismatchError(
                f"MLP dim {dim} != manifest {params['dim']} / view {view.dim}"
            )
        _check_state(head._state, head._p(), directory)
        return head


def _check_state(
    state: dict[str, npt.NDArray[Any]], params: MlpParams, directory: Path
) -> None:
    """The unfolded state must have the folded weights' architecture."""
    shapes = {
        f"hidden.{4 * i}.weight": w.shape for i, w in enumerate(params.hidden_weights)
    }
    shapes["output_layer.weight"] = (1, params.out_weight.shape[0])
    shapes["input_mean"] = (params.dim,)
    bad = [
        k for k, shape in shapes.items() if k not in state or state[k].shape != shape
    ]
    n_linear = (
        sum(k.endswith(".weight") and k.startswith("hidden.") for k in state) // 2
    )
    if bad or n_linear != len(params.hidden_weights):
        raise ArtifactMismatchError(f"MLP state in {directory} does not fit: {bad}")
