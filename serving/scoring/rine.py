"""Domain: pure-numpy inference for the RINE head (Koutlis & Papadopoulos, ECCV 2024).

Eval-mode forward of `serving.training.rine.RineNet` (Dropout is the identity):

1. the view's per-block CLS tokens ``(n, L, D)`` go through the shared projection
   ``n_proj x [Linear, ReLU]`` block by block -> ``(n, L, q)``;
2. the Trainable Importance Estimator weighs the blocks with ``softmax(alpha)``
   over the block axis (one weight per block and channel) and sums them -> ``(n, q)``;
3. ``n_proj x [Linear(q, q), ReLU]`` -> ``n_head x [Linear(q, q), ReLU]`` ->
   ``Linear(q, 1)``, the logit.

Everything is accumulated in float64 so that a row's logit does not depend on the
rows it shares a batch with (BLAS sums in a batch-size-dependent order).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError

FloatArray = npt.NDArray[np.float32]
F64Array = npt.NDArray[np.float64]
Layer = tuple[FloatArray, FloatArray]
F64Layer = tuple[F64Array, F64Array]


def _check_chain(layers: tuple[Layer, ...], d_in: int, what: str) -> int:
    """Check ``(W (d_out, d_in), b (d_out,))`` layers chain from `d_in`; return d_out."""
    for w, b in layers:
        if w.ndim != 2 or w.shape[1] != d_in or b.shape != (w.shape[0],):
            raise InvalidInputError(
                f"bad {what} layer {w.shape}, {b.shape} (input {d_in})"
            )
        d_in = int(w.shape[0])
    return d_in


def _f64(layers: tuple[Layer, ...]) -> tuple[F64Layer, ...]:
    return tuple((w.T.astype(np.float64), b.astype(np.float64)) for w, b in layers)


@dataclass(frozen=True, eq=False)
class RineParams:
    """RINE weights, ready for `rine_logit`.

    Attributes:
        n_blocks: Number of blocks L in the input.
        block_dim: Width D of each block's token.
        proj1: Shared per-block projection, ``(W (q, d_in), b (q,))`` per layer.
        alpha: (L, q) importance logits (softmax over blocks).
        proj2: Projection after the weighted sum, ``(W (q, q), b (q,))`` per layer.
        head: Hidden layers of the classifier, ``(W (q, q), b (q,))`` per layer.
        out_weight: (q,) weight of the final ``Linear(q, 1)``.
        out_bias: Its bias.
    """

    n_blocks: int
    block_dim: int
    proj1: tuple[Layer, ...]
    alpha: FloatArray
    proj2: tuple[Layer, ...]
    head: tuple[Layer, ...]
    out_weight: FloatArray
    out_bias: float

    def __post_init__(self) -> None:
        if self.n_blocks < 1 or self.block_dim < 1 or not self.proj1:
            raise InvalidInputError("need n_blocks, block_dim >= 1 and a projection")
        q = _check_chain(self.proj1, self.block_dim, "proj1")
        if self.alpha.shape != (self.n_blocks, q):
            raise InvalidInputError(
                f"alpha {self.alpha.shape}, expected ({self.n_blocks}, {q})"
            )
        q = _check_chain(self.proj2, q, "proj2")
        q = _check_chain(self.head, q, "head")
        if self.out_weight.shape != (q,):
            raise InvalidInputError(
                f"out_weight {self.out_weight.shape}, expected ({q},)"
            )

    @property
    def dim(self) -> int:
        """Input width ``n_blocks * block_dim`` (the flat view output)."""
        return self.n_blocks * self.block_dim

    @cached_property
    def block_weights(self) -> F64Array:
        """(L, q) softmax of `alpha` over the blocks, in float64."""
        a = self.alpha.astype(np.float64)
        e = np.exp(a - a.max(axis=0, keepdims=True))
        out: F64Array = e / e.sum(axis=0, keepdims=True)
        return out

    @cached_property
    def float64_layers(
        self,
    ) -> tuple[tuple[F64Layer, ...], tuple[F64Layer, ...], tuple[F64Layer, ...]]:
        """``(W.T, b)`` float64 copies of proj1, proj2 and head, converted once."""
        return _f64(self.proj1), _f64(self.proj2), _f64(self.head)

    @cached_property
    def float64_out_weight(self) -> F64Array:
        """`out_weight` in float64, converted once."""
        return self.out_weight.astype(np.float64)


def _mlp(h: F64Array, layers: tuple[F64Layer, ...]) -> F64Array:
    for w_t, b in layers:
        h = np.maximum(h @ w_t + b, 0.0)
    return h


def rine_logit(x: FloatArray, params: RineParams) -> FloatArray:
    """Logit of the RINE head.

    Args:
        x: (n, L * D) block tokens as the head's `FeatureView` produced them
            (blocks concatenated in order).
        params: The weights.

    Returns:
        (n,) float32 logits; higher = more likely fake.

    Raises:
        InvalidInputError: `x` is not (n, L * D) or not finite.
    """
    xa = np.asarray(x, dtype=np.float32)
    if xa.ndim != 2 or xa.shape[1] != params.dim:
        raise InvalidInputError(f"expected (n, {params.dim}) features, got {xa.shape}")
    if not np.isfinite(xa).all():
        raise InvalidInputError("features must be finite")
    proj1, proj2, head = params.float64_layers
    n = xa.shape[0]
    g = _mlp(
        xa.astype(np.float64).reshape(n * params.n_blocks, params.block_dim), proj1
    )
    z = (g.reshape(n, params.n_blocks, -1) * params.block_weights).sum(axis=1)
    h = _mlp(_mlp(z, proj2), head)
    return (h @ params.float64_out_weight + params.out_bias).astype(np.float32)
