"""The feature cache: a miss returns what every later hit returns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fakes import FakeEncoder
from PIL import Image

from serving.features import cached_features
from serving.workflows import dataset_items


def _tree(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for cls, level in (("0_real", 60), ("1_fake", 190)):
        folder = root / "fam" / cls
        folder.mkdir(parents=True)
        for i in range(4):
            noise = rng.integers(0, 60, (32, 32, 3))
            Image.fromarray((noise + level).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_a_miss_returns_the_cached_rows_not_the_unrounded_extraction(
    tmp_path: Path,
) -> None:
    root, cache = _tree(tmp_path / "data"), tmp_path / "cache"
    items = dataset_items(root)
    first = cached_features(cache, root, items, FakeEncoder(), "clip_default")
    again = cached_features(cache, root, items, FakeEncoder(), "clip_default")
    assert len(list(cache.glob("*.npz"))) == 1  # the second call was a hit
    # before, a miss returned float32 rows and a hit their float16 rounding, so a
    # first run trained (and chose its decision) on other numbers than a rerun
    np.testing.assert_array_equal(first.x, again.x)
    np.testing.assert_array_equal(first.x, first.x.astype(np.float16))
    assert (first.y == again.y).all()
    assert first.paths == again.paths
