"""Fixtures shared by the model-repository contract tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def dummy_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Bytes standing in for the encoder file (hashed and copied, never loaded)."""
    path = tmp_path_factory.mktemp("enc") / "encoder.onnx"
    path.write_bytes(b"not really onnx")
    return path
