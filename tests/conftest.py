"""Shared fixtures and kind markers (unit / integration / e2e by folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))

_KINDS = ("unit", "contract", "integration", "e2e")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        rel = Path(str(item.path)).relative_to(root)
        if rel.parts and rel.parts[0] in _KINDS:
            item.add_marker(getattr(pytest.mark, rel.parts[0]))


@pytest.fixture(scope="session")
def tiny_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tiny_clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
