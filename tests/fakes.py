"""Test doubles: deterministic encoders and synthetic feature sets."""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from serving.encoders.base import EncoderInfo
from serving.features import FeatureMeta, FeatureSet


class FakeEncoder:
    """Deterministic encoder: a fixed random projection of mean-pooled pixels."""

    def __init__(self, dim: int = 16) -> None:
        self._proj = (
            np.random.default_rng(7).normal(size=(3 * 16, dim)).astype(np.float32)
        )
        self._info = EncoderInfo("fake-encoder", "0" * 64, dim)

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def encode(self, pixels: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        n = len(pixels)
        pooled = pixels.reshape(n, 4, 56, 4, 56, 3).mean(axis=(2, 4)).reshape(n, -1)
        pooled = pooled[:, : 3 * 16].astype(np.float32) / 255.0
        return pooled @ self._proj


def synthetic_features(
    n_per_class: int = 40,
    dim: int = 16,
    families: tuple[str, ...] = ("a", "b", "c"),
    shift: float = 1.5,
    seed: int = 0,
) -> FeatureSet:
    """Gaussian features: fakes of each family shifted along a family direction."""
    rng = np.random.default_rng(seed)
    xs, ys, fams, paths = [], [], [], []
    for f_i, fam in enumerate(families):
        direction = np.zeros(dim, dtype=np.float32)
        direction[f_i % dim] = shift
        direction[(f_i + 1) % dim] = shift / 2
        for label in (0, 1):
            x = rng.normal(size=(n_per_class, dim)).astype(np.float32) + 3.0
            xs.append(x + (direction if label else 0))
            ys += [label] * n_per_class
            fams += [fam] * n_per_class
            paths += [f"{fam}/{label}/{i}.jpg" for i in range(n_per_class)]
    x = np.concatenate(xs).astype(np.float32)
    digest = hashlib.sha256(x.tobytes()).hexdigest()
    meta = FeatureMeta(
        "fake-encoder", "0" * 64, "clip_default@1", "none", digest, len(ys), dim, 0.0
    )
    return FeatureSet(x, np.array(ys, dtype=np.int64), tuple(paths), tuple(fams), meta)
