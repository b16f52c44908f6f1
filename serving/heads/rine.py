"""Adapter: the RINE head (Koutlis & Papadopoulos, ECCV 2024) on cached CLS tokens.

RINE reads the CLS token of every transformer block of the frozen CLIP encoder; here
the tokens come from the flat feature rows through a ``blocks`` `FeatureView`
(per-block L2 normalisation or none). Training is in torch
(`serving.training.rine`, imported inside `fit` / `to_torch` only); `score`, `save`
and `load` are pure numpy (`serving.scoring.rine`), with the weights in one
safetensors file named as the torch state dict, and JSON parameters.

With generator families (``train.groups``) the head early-stops on a held-out
family, then refits on all training rows for the selected number of epochs
(`serving.heads.mlp.holdout_split`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file, save_file

from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.heads.base import FloatArray, LabeledFeatures
from serving.heads.mlp import holdout_split
from serving.scoring.rine import RineParams, rine_logit
from serving.scoring.views import FeatureView

if TYPE_CHECKING:
    from serving.training.rine import RineNet, RineTrainingSummary

Reduction = Literal["sum", "mean"]
XI_VALUES: Final = (0.1, 0.2, 0.4, 0.8)
WEIGHTS_FILE: Final = "rine.safetensors"
_LOAD_ERRORS: Final = (KeyError, TypeError, ValueError, OSError, InvalidInputError)


@dataclass(frozen=True)
class RineTrainConfig:
    """Hyper-parameters of the RINE head and its trainer.

    Attributes:
        proj_dim: Projection width q (RINE: 128 or 1024; 128 for a few thousand images).
        n_proj: Layers in each of the two projections (RINE: 1, 2 or 4).
        n_head: Hidden ``Linear(q, q)`` layers of the classifier (RINE: 2).
        dropout: Probability of every Dropout (RINE: torch's default 0.5).
        xi: Weight of the SupCon term (RINE's grid: 0.1, 0.2, 0.4, 0.8).
        temperature: SupCon temperature (and base temperature).
        bce_reduction: ``sum`` over the batch (RINE) or ``mean``.
        lr: Adam learning rate.
        weight_decay: Adam (L2) weight decay (RINE: 0).
        batch_size: Mini-batch size.
        max_epochs: Upper bound on epochs.
        patience: Stop after this many epochs without a validation-AUC gain.
        refit: After early stopping on a held-out family, retrain on all training
            rows for the selected number of epochs.
        holdout_family: Family to hold out for early stopping (None: the one with
            the most fake training rows).
        seed: Torch seed (initialisation, dropout, shuffling).
    """

    proj_dim: int = 128
    n_proj: int = 2
    n_head: int = 2
    dropout: float = 0.5
    xi: float = 0.2
    temperature: float = 0.07
    bce_reduction: Reduction = "sum"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 128
    max_epochs: int = 30
    patience: int = 5
    refit: bool = True
    holdout_family: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.proj_dim < 1 or self.n_proj < 1 or self.n_head < 0:
            raise InvalidInputError("need proj_dim >= 1, n_proj >= 1, n_head >= 0")
        if not 0.0 <= self.dropout < 1.0 or self.xi < 0.0 or self.temperature <= 0:
            raise InvalidInputError("need 0 <= dropout < 1, xi >= 0, temperature > 0")
        if self.bce_reduction not in ("sum", "mean"):
            raise InvalidInputError(f"bce_reduction {self.bce_reduction!r}")
        if self.max_epochs < 1 or self.batch_size < 2 or self.patience < 1:
            raise InvalidInputError(
                "need max_epochs >= 1, batch_size >= 2, patience >= 1"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> RineTrainConfig:
        """Inverse of `to_dict`."""
        return cls(**doc)


def _linear_keys(prefix: str, first: int, n: int) -> list[str]:
    """State-dict names of the Linear layers of one ``[Linear, ReLU, Dropout]`` run."""
    return [f"{prefix}.{first + 3 * i}" for i in range(n)]


def params_from_state(
    state: dict[str, npt.NDArray[Any]], cfg: RineTrainConfig, view: FeatureView
) -> RineParams:
    """Numpy `RineParams` from a `RineNet` state dict (as numpy arrays).

    Raises:
        KeyError: A tensor is missing.
        InvalidInputError: The shapes do not chain or do not fit the view.
    """

    def layers(keys: list[str]) -> tuple[tuple[FloatArray, FloatArray], ...]:
        return tuple(
            (
                np.asarray(state[f"{k}.weight"], np.float32),
                np.asarray(state[f"{k}.bias"], np.float32),
            )
            for k in keys
        )

    out = f"head.{3 * cfg.n_head}"
    alpha = np.asarray(state["alpha"], np.float32)
    if alpha.ndim != 3 or alpha.shape[0] != 1:
        raise InvalidInputError(f"alpha {alpha.shape}, expected (1, L, q)")
    return RineParams(
        n_blocks=len(view.block_ids),
        block_dim=view.layout.block_dim,
        proj1=layers(_linear_keys("proj1", 1, cfg.n_proj)),
        alpha=alpha[0],
        proj2=layers(_linear_keys("proj2", 1, cfg.n_proj)),
        head=layers(_linear_keys("head", 0, cfg.n_head)),
        out_weight=np.asarray(state[f"{out}.weight"], np.float32).reshape(-1),
        out_bias=float(np.asarray(state[f"{out}.bias"]).reshape(-1)[0]),
    )


class RineHead:
    """RINE on the per-block CLS tokens of a ``blocks`` view; `score` is the logit.

    Args:
        view: A ``blocks`` view of the flat features (RINE uses all blocks).
        config: Head and trainer hyper-parameters (defaults when None).

    Attributes:
        summary: Training summary of the run that chose the epoch (on the held-out
            family when groups were given, else on `val`).
        holdout_family: The family held out for early stopping, if any.
        refit_epochs: Epochs of the final refit on all rows (None without refit).

    Raises:
        InvalidInputError: The view is not a ``blocks`` view.
    """

    name: str = "rine"

    def __init__(
        self, view: FeatureView, config: RineTrainConfig | None = None
    ) -> None:
        if view.source != "blocks":
            raise InvalidInputError(f"RINE needs a 'blocks' view, got {view.source!r}")
        self.view = view
        self.config = config or RineTrainConfig()
        self._state: dict[str, npt.NDArray[Any]] = {}
        self._params: RineParams | None = None
        self.summary: RineTrainingSummary | None = None
        self.holdout_family: str | None = None
        self.refit_epochs: int | None = None

    @property
    def n_blocks(self) -> int:
        """Blocks the head reads."""
        return len(self.view.block_ids)

    def _p(self) -> RineParams:
        if self._params is None:
            raise InvalidInputError("the RINE head is not fitted")
        return self._params

    def fit(self, train: LabeledFeatures, val: LabeledFeatures) -> None:
        """Train on `train`, early-stopping on a held-out family or on `val`.

        With ``train.groups`` the family with the most fake rows (or
        ``config.holdout_family``) is held out for early stopping and the head is
        then refit on all of `train` for the selected epochs (``config.refit``);
        otherwise the epoch with the best ROC-AUC on `val` is kept.
        """
        from serving.training.rine import train_rine

        cfg, n_blocks = self.config, self.n_blocks
        split = holdout_split(train, val, self.view.apply, cfg.holdout_family)
        self.holdout_family, self.refit_epochs = None, None
        if split is None:
            x, xv = self.view.apply(train.x), self.view.apply(val.x)
            result = train_rine(x, train.y, n_blocks, xv, val.y, cfg)
            net, self.summary = result.net, result.summary
        else:
            result = train_rine(
                split.fit_x, split.fit_y, n_blocks, split.stop_x, split.stop_y, cfg
            )
            net, self.summary = result.net, result.summary
            self.holdout_family = split.family
            if cfg.refit:
                self.refit_epochs = result.summary.best_epoch + 1
                x = self.view.apply(train.x)
                net = train_rine(
                    x, train.y, n_blocks, config=cfg, epochs=self.refit_epochs
                ).net
        self._state = {
            k: v.detach().cpu().numpy().astype(np.float32)
            for k, v in net.state_dict().items()
        }
        self._params = params_from_state(self._state, cfg, self.view)

    def score(self, x: FloatArray) -> FloatArray:
        """Logits (n,) float32 of (n, layout.width) flat rows (numpy path)."""
        return rine_logit(self.view.apply(x), self._p())

    def to_torch(self) -> RineNet:
        """The same head as an eval-mode `RineNet`; it takes the view's output."""
        import torch

        from serving.training.rine import RineNet

        cfg, p = self.config, self._p()
        net = RineNet(
            p.n_blocks, p.block_dim, cfg.proj_dim, cfg.n_proj, cfg.n_head, cfg.dropout
        )
        net.load_state_dict({k: torch.from_numpy(v) for k, v in self._state.items()})
        return net.eval()

    def save(self, directory: Path) -> dict[str, Any]:
        """Write the weights (safetensors, state-dict names) into `directory`.

        Returns:
            Manifest parameters: view, dims, files, config, training summary and
            hold-out selection.
        """
        p = self._p()
        directory.mkdir(parents=True, exist_ok=True)
        save_file(self._state, str(directory / WEIGHTS_FILE))
        return {
            "head": self.name,
            "view": self.view.to_dict(),
            "dim": p.dim,
            "n_blocks": p.n_blocks,
            "block_dim": p.block_dim,
            "files": {"weights": WEIGHTS_FILE},
            "config": self.config.to_dict(),
            "training": self.summary.to_dict() if self.summary else None,
            "holdout_family": self.holdout_family,
            "refit_epochs": self.refit_epochs,
        }

    @classmethod
    def load(cls, directory: Path, params: dict[str, Any]) -> RineHead:
        """Rebuild a head written by `save` (no torch needed).

        Raises:
            ArtifactMismatchError: The file is missing or disagrees with `params`.
        """
        try:
            view = FeatureView.from_dict(params["view"])
            head = cls(view, RineTrainConfig.from_dict(dict(params["config"])))
            head._state = load_file(str(directory / params["files"]["weights"]))
            head._params = params_from_state(head._state, head.config, view)
            head.holdout_family = params.get("holdout_family")
            head.refit_epochs = params.get("refit_epochs")
            dim = int(params["dim"])
        except _LOAD_ERRORS as exc:
            raise ArtifactMismatchError(f"RINE head in {directory}: {exc}") from exc
        if head._p().dim != dim or dim != view.dim:
            raise ArtifactMismatchError(
                f"RINE dim {head._p().dim} != manifest {dim} / view {view.dim}"
            )
        return head
