"""Domain: the UnivFD linear probe (``Linear(d, 1)``) as a pure-numpy logit."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError

FloatArray = npt.NDArray[np.float32]


def probe_logit(x: FloatArray, w: FloatArray, b: float) -> FloatArray:
    """Logit of the linear probe, ``x @ w + b``.

    Args:
        x: (n, d) raw (unnormalised) features, as UnivFD feeds its probe.
        w: (d,) or (1, d) weight of ``nn.Linear(d, 1)``.
        b: The bias.

    Returns:
        (n,) float32 logits; higher = more likely fake.

    Raises:
        InvalidInputError: `x` is not (n, d) for the `d` of `w`, or not finite.
    """
    xa = np.asarray(x, dtype=np.float32)
    wa = np.asarray(w, dtype=np.float32).reshape(-1)
    if xa.ndim != 2 or xa.shape[1] != wa.shape[0]:
        raise InvalidInputError(f"expected (n, {wa.shape[0]}) features, got {xa.shape}")
    if not np.isfinite(xa).all():
        raise InvalidInputError("features must be finite")
    # float64 accumulation keeps a row's logit independent of its batch (see mlp_logit)
    return (xa.astype(np.float64) @ wa.astype(np.float64) + b).astype(np.float32)
