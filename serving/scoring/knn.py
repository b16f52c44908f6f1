"""Domain: the UnivFD nearest-neighbour score from cosine similarities, in pure numpy.

With cosine distance ``d = 1 - cos``, UnivFD's k=1 score
``s(x) = min d(x, reals) - min d(x, fakes)`` equals
``max cos(x, fakes) - max cos(x, reals)``. For k > 1 (aggregation unpublished) we
average the top-k similarities of each bank: higher = more likely fake.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError

FloatArray = npt.NDArray[np.float32]

_NORM_EPS = 1e-12


def l2_normalize(x: FloatArray) -> FloatArray:
    """L2-normalise each row.

    Args:
        x: (n, d) features; an all-zero row stays zero.

    Returns:
        (n, d) float32, every non-zero row of unit L2 norm.

    Raises:
        InvalidInputError: `x` is not 2-D or not finite.
    """
    xa = np.asarray(x, dtype=np.float32)
    if xa.ndim != 2:
        raise InvalidInputError(f"expected (n, d) features, got shape {xa.shape}")
    if not np.isfinite(xa).all():
        raise InvalidInputError("features must be finite")
    norms: npt.NDArray[np.float64] = np.linalg.norm(
        xa.astype(np.float64), axis=1, keepdims=True
    )
    out: FloatArray = (xa / np.maximum(norms, _NORM_EPS)).astype(np.float32)
    return out


def _top_k_mean(sims: FloatArray, k: int, bank: str) -> npt.NDArray[np.float64]:
    """Mean of the k largest entries of each row."""
    if sims.ndim != 2 or sims.shape[1] < k:
        raise InvalidInputError(
            f"{bank} similarities need shape (n, >= {k}), got {sims.shape}"
        )
    if not np.isfinite(sims).all():
        raise InvalidInputError(f"{bank} similarities must be finite")
    top = -np.sort(-sims.astype(np.float64), axis=1)[:, :k]
    mean: npt.NDArray[np.float64] = top.mean(axis=1)
    return mean


def knn_score(sims_real: FloatArray, sims_fake: FloatArray, k: int) -> FloatArray:
    """Score queries by their k nearest real and fake exemplars.

    Args:
        sims_real: (n, >= k) cosine similarities of each query to its nearest reals
            (any order; the k largest per row are used).
        sims_fake: (n, >= k) cosine similarities to its nearest fakes.
        k: Number of neighbours per bank, >= 1.

    Returns:
        (n,) float32 ``mean top-k cos(fakes) - mean top-k cos(reals)``, in [-2, 2];
        higher = more likely fake.

    Raises:
        InvalidInputError: `k` < 1, shapes disagree, or similarities are not finite.
    """
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}")
    real = np.asarray(sims_real, dtype=np.float32)
    fake = np.asarray(sims_fake, dtype=np.float32)
    if real.shape[:1] != fake.shape[:1]:
        raise InvalidInputError(
            f"real {real.shape} and fake {fake.shape} similarities disagree on n"
        )
    score = _top_k_mean(fake, k, "fake") - _top_k_mean(real, k, "real")
    return score.astype(np.float32)
