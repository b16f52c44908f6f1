"""Test doubles: deterministic encoders and synthetic feature sets."""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

from serving.encoders.base import EncoderInfo, Encoding
from serving.features import FeatureMeta, FeatureSet
from serving.scoring.views import FeatureLayout

FAKE_BLOCKS = 2
FAKE_BLOCK_DIM = 8


def fake_info(dim: int = 16) -> EncoderInfo:
    """Identity of the fake encoder: `dim`-d embeddings, two 8-d block tokens."""
    return EncoderInfo(
        "fake-encoder", "0" * 64, dim, n_blocks=FAKE_BLOCKS, block_dim=FAKE_BLOCK_DIM
    )


class FakeEncoder:
    """Deterministic encoder: fixed random projections of mean-pooled pixels."""

    def __init__(self, dim: int = 16) -> None:
        rng = np.random.default_rng(7)
        width = dim + FAKE_BLOCKS * FAKE_BLOCK_DIM
        self._proj = rng.normal(size=(3 * 16, width)).astype(np.float32)
        self._info = fake_info(dim)

    @property
    def info(self) -> EncoderInfo:
        return self._info

    def encode(self, pixels: npt.NDArray[np.uint8]) -> Encoding:
        n = len(pixels)
        pooled = pixels.reshape(n, 4, 56, 4, 56, 3).mean(axis=(2, 4)).reshape(n, -1)
        pooled = pooled[:, : 3 * 16].astype(np.float32) / 255.0
        flat = pooled @ self._proj
        layout = self._info.layout
        return Encoding(layout.embeds(flat).copy(), layout.blocks(flat).copy())


def synthetic_features(
    n_per_class: int = 40,
    embed_dim: int = 16,
    families: tuple[str, ...] = ("a", "b", "c"),
    shift: float = 1.5,
    seed: int = 0,
) -> FeatureSet:
    """Gaussian flat rows: fakes of each family shifted along a family direction.

    The first `embed_dim` columns are the "embedding", then two 8-d block tokens;
    the shift moves the same coordinates in the embedding and in every block.
    """
    rng = np.random.default_rng(seed)
    layout = FeatureLayout(embed_dim, FAKE_BLOCKS, FAKE_BLOCK_DIM)
    starts = [0] + [embed_dim + b * FAKE_BLOCK_DIM for b in range(FAKE_BLOCKS)]
    widths = [embed_dim] + [FAKE_BLOCK_DIM] * FAKE_BLOCKS
    xs, ys, fams, paths = [], [], [], []
    for f_i, fam in enumerate(families):
        direction = np.zeros(layout.width, dtype=np.float32)
        for start, width in zip(starts, widths, strict=True):
            direction[start + f_i % width] = shift
            direction[start + (f_i + 1) % width] = shift / 2
        for label in (0, 1):
            x = rng.normal(size=(n_per_class, layout.width)).astype(np.float32) + 3.0
            xs.append(x + (direction if label else 0))
            ys += [label] * n_per_class
            fams += [fam] * n_per_class
            paths += [f"{fam}/{label}/{i}.jpg" for i in range(n_per_class)]
    x = np.concatenate(xs).astype(np.float32)
    digest = hashlib.sha256(x.tobytes()).hexdigest()
    meta = FeatureMeta.of(fake_info(embed_dim), "clip_default@1", digest, len(ys))
    return FeatureSet(x, np.array(ys, dtype=np.int64), tuple(paths), tuple(fams), meta)


class FakeTextEncoder:
    """Deterministic text tower: a vector seeded by the sha256 of each string."""

    def __init__(self, dim: int = 8, weights: str = "2" * 64) -> None:
        self._info = EncoderInfo("fake-text", weights, 0, text_dim=dim)

    @property
    def info(self) -> EncoderInfo:
        return self._info

    @property
    def text_tower(self) -> str:
        return "fake_text_tower"

    def encode_text(self, texts: list[str]) -> npt.NDArray[np.float32]:
        rows = [
            np.random.default_rng(
                int.from_bytes(hashlib.sha256(t.encode()).digest()[:8], "little")
            ).normal(size=self._info.text_dim)
            for t in texts
        ]
        return np.asarray(rows, dtype=np.float32).reshape(-1, self._info.text_dim)
