"""Domain: pure-numpy inference for the Santosh et al. MLP head (eval mode).

Each hidden block ``Linear -> BatchNorm1d -> LeakyReLU -> Dropout`` becomes one
affine map (BatchNorm folded into the Linear, Dropout is the identity in eval mode)
followed by LeakyReLU. Inputs are first standardised with the training mean/std.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError

FloatArray = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]


@dataclass(frozen=True, eq=False)
class MlpParams:
    """Folded MLP weights, ready for `mlp_logit`.

    Attributes:
        input_mean: (d,) training-feature mean, subtracted first.
        input_std: (d,) training-feature std (> 0), divided next.
        hidden_weights: per hidden block, (d_out, d_in) Linear weight with BN folded.
        hidden_biases: per hidden block, (d_out,) bias with BN folded.
        out_weight: (d_last,) weight of the final ``Linear(d_last, 1)``.
        out_bias: Its bias.
        negative_slope: LeakyReLU slope.
    """

    input_mean: FloatArray
    input_std: FloatArray
    hidden_weights: tuple[FloatArray, ...]
    hidden_biases: tuple[FloatArray, ...]
    out_weight: FloatArray
    out_bias: float
    negative_slope: float = 0.01

    def __post_init__(self) -> None:
        d = self.input_mean.shape[0]
        if self.input_mean.shape != (d,) or self.input_std.shape != (d,):
            raise InvalidInputError("input_mean and input_std must both be (d,)")
        if not (self.input_std > 0).all():
            raise InvalidInputError("input_std must be > 0")
        if len(self.hidden_weights) != len(self.hidden_biases):
            raise InvalidInputError("one bias per hidden weight is required")
        d_in = d
        for w, b in zip(self.hidden_weights, self.hidden_biases, strict=True):
            if w.ndim != 2 or w.shape[1] != d_in or b.shape != (w.shape[0],):
                raise InvalidInputError(f"bad hidden layer {w.shape}, {b.shape}")
            d_in = w.shape[0]
        if self.out_weight.shape != (d_in,):
            raise InvalidInputError(f"out_weight must be ({d_in},)")

    @property
    def dim(self) -> int:
        """Input dimension d."""
        return int(self.input_mean.shape[0])

    @cached_property
    def float64_layers(self) -> tuple[tuple[F64Array, F64Array], ...]:
        """Per hidden block ``(W'.T, b')`` in float64, converted once, not per call."""
        return tuple(
            (w.T.astype(np.float64), b.astype(np.float64))
            for w, b in zip(self.hidden_weights, self.hidden_biases, strict=True)
        )

    @cached_property
    def float64_out_weight(self) -> F64Array:
        """`out_weight` in float64, converted once."""
        return self.out_weight.astype(np.float64)


def fold_batchnorm(
    weight: FloatArray,
    bias: FloatArray,
    bn_weight: FloatArray,
    bn_bias: FloatArray,
    running_mean: FloatArray,
    running_var: FloatArray,
    eps: float = 1e-5,
) -> tuple[FloatArray, FloatArray]:
    """Fold an eval-mode ``BatchNorm1d`` into the preceding ``Linear``.

    ``BN(W x + b) = s * (W x + b - mu) + beta`` with ``s = gamma / sqrt(var + eps)``,
    i.e. ``W' = s[:, None] * W`` and ``b' = s * (b - mu) + beta``.

    Args:
        weight: (d_out, d_in) Linear weight.
        bias: (d_out,) Linear bias.
        bn_weight: (d_out,) BN gamma.
        bn_bias: (d_out,) BN beta.
        running_mean: (d_out,) BN running mean.
        running_var: (d_out,) BN running variance.
        eps: BN epsilon.

    Returns:
        ``(W', b')`` as float32, (d_out, d_in) and (d_out,).
    """
    scale = np.asarray(bn_weight, np.float64) / np.sqrt(
        np.asarray(running_var, np.float64) + eps
    )
    w = np.asarray(weight, np.float64) * scale[:, None]
    b = (np.asarray(bias, np.float64) - running_mean) * scale + bn_bias
    return w.astype(np.float32), b.astype(np.float32)


def mlp_logit(x: FloatArray, params: MlpParams) -> FloatArray:
    """Logit of the MLP head on raw features.

    Args:
        x: (n, d) raw features (image, or image ‖ text as the head was trained).
        params: Folded weights.

    Returns:
        (n,) float32 logits; higher = more likely fake. Accumulated in float64, so a
        row's logit does not depend on the other rows of the batch.

    Raises:
        InvalidInputError: `x` is not (n, d) or not finite.
    """
    xa = np.asarray(x, dtype=np.float32)
    if xa.ndim != 2 or xa.shape[1] != params.dim:
        raise InvalidInputError(f"expected (n, {params.dim}) features, got {xa.shape}")
    if not np.isfinite(xa).all():
        raise InvalidInputError("features must be finite")
    # float64 accumulation: BLAS sums in a batch-size-dependent order, and in
    # float32 that moved a score by ~1e-6 depending on which images shared its batch.
    h = (xa.astype(np.float64) - params.input_mean) / params.input_std
    for w_t, b in params.float64_layers:
        h = h @ w_t + b
        h = np.where(h >= 0, h, params.negative_slope * h)
    return (h @ params.float64_out_weight + params.out_bias).astype(np.float32)
