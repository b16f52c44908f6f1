"""The exported repository of artifacts with a text source (the image ⊕ text MLP).

Hermetic: heads fitted on synthetic image rows plus REAL text embeddings of the
tiny CLIP fixture's text tower; the "image encoder" is a dummy file. The pipeline
runs with the real `TextEncoderBackend` and `HeadBackend`s and an in-memory BLS.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fakes import synthetic_features
from triton_fixtures import backend_args

from serving.artifacts import EncoderRecord, load_artifacts, write_artifacts
from serving.encoders.base import EncoderInfo
from serving.encoders.hf_clip import HfClipEncoder
from serving.errors import ArtifactMismatchError, MissingWeightsError
from serving.features import FeatureSet
from serving.hashing import sha256_file
from serving.scoring.views import FeatureLayout
from serving.text_source import TextSource, encode_texts
from serving.triton import names
from serving.triton.backend import (
    DetectorPipeline,
    HeadBackend,
    TextEncoderBackend,
)
from serving.triton.configs import (
    expected_table,
    get_parameter,
    read_config,
    tensor_table,
)
from serving.triton.export import export_repository
from serving.workflows import HeadOptions, calibrate_heads, fit_heads

DIM = 16
WORDS = ("a cat", "a dog", "a photo", "a render", "noise")
SOURCE = TextSource.parse("caption")


def _captions(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [str(WORDS[i]) for i in rng.integers(len(WORDS), size=n)]


def _rows(fs: FeatureSet, text: np.ndarray) -> FeatureSet:
    image = FeatureLayout.from_dict(fs.meta.layout)
    layout = replace(image, text_dim=text.shape[1])
    x = layout.flatten(image.embeds(fs.x), image.blocks(fs.x), text)
    return replace(fs, x=x, meta=replace(fs.meta, layout=layout.to_dict()))


@pytest.fixture(scope="module")
def tower(tiny_clip_dir: Path) -> HfClipEncoder:
    return HfClipEncoder(tiny_clip_dir)


@pytest.fixture(scope="module")
def artifacts(
    tmp_path_factory: pytest.TempPathFactory, tower: HfClipEncoder, dummy_encoder: Path
) -> Path:
    opts = HeadOptions(mlp_epochs=2, mlp_batch_size=32, rine_epochs=2)
    train, cal = (
        synthetic_features(n_per_class=20, embed_dim=DIM, seed=s) for s in (0, 1)
    )
    train = _rows(train, encode_texts(tower, SOURCE, _captions(len(train.y), 0)))
    cal = _rows(cal, encode_texts(tower, SOURCE, _captions(len(cal.y), 1)))
    heads = fit_heads(train, ("knn_k1", "linear_probe", "mlp", "rine"), opts)
    cals = calibrate_heads(heads, cal, opts)
    image = EncoderInfo(
        "dummy", sha256_file(dummy_encoder), DIM, n_blocks=2, block_dim=8
    )
    record = EncoderRecord.from_info(image, "clip_default@1", SOURCE, tower.info)
    out = tmp_path_factory.mktemp("artifacts")
    write_artifacts(out, record, heads, cals, "mlp", {"test": True})
    return out


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory,
    artifacts: Path,
    dummy_encoder: Path,
    tiny_clip_dir: Path,
) -> Path:
    out = tmp_path_factory.mktemp("export") / "repo"
    export_repository(
        artifacts, out, encoder_onnx=dummy_encoder, text_tower_dir=tiny_clip_dir
    )
    return out


def test_text_export_serves_the_text_tower_and_feeds_the_mlp(
    exported: Path, artifacts: Path, tiny_clip_dir: Path
) -> None:
    layout = load_artifacts(artifacts).manifest.encoder.layout
    assert layout.text_dim == 32
    text_config = read_config(exported / names.TEXT_ENCODER_MODEL / "config.pbtxt")
    assert get_parameter(text_config, names.PARAM_TEXT_TOWER_DIR) == str(
        tiny_clip_dir.resolve()
    )
    for model in (*names.MODELS, names.TEXT_ENCODER_MODEL):
        config = read_config(exported / model / "config.pbtxt")
        assert tensor_table(config) == expected_table(model, layout, 1), model
    mlp = read_config(exported / names.HEAD_MODELS["mlp"] / "config.pbtxt")
    assert names.TEXT_EMBEDDING.name in {t.name for t in mlp.input}


def test_text_export_needs_the_trained_with_tower(
    artifacts: Path, dummy_encoder: Path, tmp_path: Path
) -> None:
    from tiny_clip import write_tiny_clip

    with pytest.raises(MissingWeightsError, match="text-tower-dir"):
        export_repository(artifacts, tmp_path / "a", encoder_onnx=dummy_encoder)
    other = write_tiny_clip(tmp_path / "other", seed=1)
    with pytest.raises(ArtifactMismatchError, match="text tower"):
        export_repository(
            artifacts, tmp_path / "b", encoder_onnx=dummy_encoder, text_tower_dir=other
        )


def test_pipeline_caption_reaches_the_mlp_like_in_process(
    exported: Path, artifacts: Path, tower: HfClipEncoder
) -> None:
    arts = load_artifacts(artifacts)
    layout = arts.manifest.encoder.layout
    image_rows = synthetic_features(n_per_class=2, embed_dim=DIM, seed=4).x
    backends = {
        m: HeadBackend.from_args(backend_args(exported, m))
        for m in names.HEAD_MODELS.values()
    }
    backends[names.TEXT_ENCODER_MODEL] = TextEncoderBackend.from_args(  # type: ignore[assignment]
        backend_args(exported, names.TEXT_ENCODER_MODEL)
    )

    async def infer(model: str, inputs: dict, outputs: tuple[str, ...]) -> dict:
        if model == names.ENCODER_MODEL:  # the "image" is a row index here
            rows = image_rows[inputs[names.IMAGE.name][:, 0, 0, 0]]
            return {
                names.EMBEDDING.name: layout.embeds(rows),
                names.CLS_TOKENS.name: layout.blocks(rows),
            }
        return backends[model].run(inputs)

    pipeline = DetectorPipeline.from_args(backend_args(exported, names.PIPELINE_MODEL))
    images = np.zeros((4, 224, 224, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(4)
    captions = ["a cat", "a dog", "", "a cat"]
    caption_col = np.array([[c.encode()] for c in captions], dtype=np.object_)
    batches = [
        {names.IMAGE.name: images[:2], names.CAPTION.name: caption_col[:2]},
        {names.IMAGE.name: images[2:3]},  # no caption input at all: ""
        {names.IMAGE.name: images[3:], names.CAPTION.name: caption_col[3:]},
    ]
    out = asyncio.run(pipeline.run_batch(batches, infer))
    got = np.concatenate([o[names.head_score("mlp").name][:, 0] for o in out])
    text = encode_texts(tower, SOURCE, [*captions[:2], None, captions[3]])
    x = layout.flatten(
        layout.embeds(image_rows[:4]), layout.blocks(image_rows[:4]), text
    )
    np.testing.assert_allclose(got, arts.heads["mlp"].score(x), rtol=0, atol=1e-5)
    other = layout.flatten(
        layout.embeds(image_rows[:4]),
        layout.blocks(image_rows[:4]),
        encode_texts(tower, SOURCE, ["a render"] * 4),
    )
    assert not np.allclose(arts.heads["mlp"].score(other), got, atol=1e-3)
