from pathlib import Path

import numpy as np
import pytest

from serving.encoders.hf_clip import HfClipEncoder
from serving.errors import MissingWeightsError


def _pixels(n: int) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 255, (n, 224, 224, 3), dtype=np.uint8)


def test_hf_encoder_image_features_match_direct_torch(tiny_clip_dir: Path) -> None:
    import torch
    from transformers import CLIPModel

    from serving.preprocessing import normalize

    enc = HfClipEncoder(tiny_clip_dir, batch_size=2)
    px = _pixels(3)
    got = enc.encode(px)
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    with torch.inference_mode():
        out = model.get_image_features(pixel_values=torch.from_numpy(normalize(px)))
    ref = getattr(out, "pooler_output", out).numpy()
    assert got.embeds.shape == (3, 32)
    np.testing.assert_allclose(got.embeds, ref, atol=1e-5)


@pytest.mark.parametrize("token", ["residual", "ln_2"])
def test_hf_encoder_cls_tokens_match_hidden_states_and_ln2(
    tiny_clip_dir: Path, token: str
) -> None:
    import torch
    from transformers import CLIPModel

    from serving.preprocessing import normalize

    enc = HfClipEncoder(tiny_clip_dir, batch_size=2, token=token)  # type: ignore[arg-type]
    px = _pixels(3)
    got = enc.encode(px)
    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    x = torch.from_numpy(normalize(px))
    with torch.inference_mode():
        out = model.vision_model(pixel_values=x, output_hidden_states=True)
        if token == "residual":
            want = [h[:, 0] for h in out.hidden_states[1:]]
        else:  # the output of each block's pre-MLP LayerNorm, in block order
            want = []
            hooks = [
                layer.layer_norm2.register_forward_hook(
                    lambda _m, _i, o: want.append(o[:, 0])
                )
                for layer in model.vision_model.encoder.layers
            ]
            model.vision_model(pixel_values=x)
            for hook in hooks:
                hook.remove()
    want_arr = np.stack([w.numpy() for w in want], axis=1)
    assert got.blocks.shape == (3, enc.info.n_blocks, enc.info.block_dim)
    assert enc.info.token == token
    np.testing.assert_allclose(got.blocks, want_arr, atol=1e-5)


def test_hf_encoder_text_tower_present(tiny_clip_dir: Path) -> None:
    enc = HfClipEncoder(tiny_clip_dir)
    emb = enc.encode_text(["a photo of a cat", "x" * 200])
    assert emb.shape == (2, 32)
    assert enc.info.text_dim == 32
    assert enc.text_tower == "clip_text_tower"


def test_hf_encoder_refuses_directory_without_safetensors(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text('{"model_type": "clip"}')
    with pytest.raises(MissingWeightsError, match="safetensors"):
        HfClipEncoder(tmp_path)


def test_hf_encoder_missing_dir_says_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        HfClipEncoder(tmp_path / "absent")


def test_hf_encoder_weight_hash_is_stable(tiny_clip_dir: Path) -> None:
    a = HfClipEncoder(tiny_clip_dir).info.weights_sha256
    b = HfClipEncoder(tiny_clip_dir).info.weights_sha256
    assert a == b
    assert len(a) == 64
