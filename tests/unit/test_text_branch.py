"""The image ⊕ text branch: text sources, the text part of rows, manifest, MLP."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from fakes import FakeEncoder, FakeTextEncoder, fake_info, synthetic_features
from PIL import Image

from serving.artifacts import (
    EncoderRecord,
    check_text_tower,
    load_artifacts,
    manifest_summary,
    read_manifest,
    write_artifacts,
)
from serving.cli import main
from serving.detector import Detector
from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.features import FeatureSet
from serving.heads.mlp import MlpHead
from serving.jobs import train_and_save
from serving.scoring.knn import l2_normalize
from serving.scoring.views import FeatureLayout, FeatureView, ViewError
from serving.settings import ServingSettings
from serving.text_features import TextBranch
from serving.text_source import TextSource, encode_texts
from serving.workflows import HeadOptions, calibrate_heads, fit_heads

FAST = HeadOptions(mlp_epochs=2, mlp_batch_size=32)
TEXT_DIM = 8


def _with_text(fs: FeatureSet, seed: int) -> FeatureSet:
    """`fs` with a text part whose captions differ per row ("a" for reals...)."""
    rng = np.random.default_rng(seed)
    captions = [f"{'fake' if y else 'real'} {rng.integers(5)}" for y in fs.y]
    text = encode_texts(
        FakeTextEncoder(TEXT_DIM), TextSource.parse("caption"), captions
    )
    image = FeatureLayout.from_dict(fs.meta.layout)
    layout = replace(image, text_dim=TEXT_DIM)
    x = layout.flatten(image.embeds(fs.x), image.blocks(fs.x), text)
    meta = replace(fs.meta, dim=layout.width, layout=layout.to_dict())
    return replace(fs, x=x, meta=meta)


@pytest.mark.parametrize("value", ["none", "caption", "prompt:a photo of a cat"])
def test_text_source_round_trips_its_manifest_form(value: str) -> None:
    assert str(TextSource.parse(value)) == value


@pytest.mark.parametrize("value", ["", "captions", "prompt:", "prompt:  ", "Caption"])
def test_text_source_rejects_unknown_values(value: str) -> None:
    with pytest.raises(InvalidInputError):
        TextSource.parse(value)


def test_text_source_texts_missing_caption_is_empty_and_prompt_is_fixed() -> None:
    assert TextSource.parse("caption").texts(["a cat", None]) == ["a cat", ""]
    assert TextSource.parse("prompt:x").texts(["a cat", None]) == ["x", "x"]
    with pytest.raises(InvalidInputError):
        TextSource.parse("none").texts([None])


def test_image_only_layout_and_view_json_are_unchanged() -> None:
    layout = FeatureLayout(4, 2, 3)
    assert layout.to_dict() == {"embed_dim": 4, "n_blocks": 2, "block_dim": 3}
    view = FeatureView(layout, "blocks")
    assert set(view.to_dict()) == {"layout", "source", "blocks", "norm"}


def test_text_view_appends_normalised_text_and_round_trips(
    rng: np.random.Generator,
) -> None:
    layout = FeatureLayout(4, 2, 3, text_dim=5)
    x = rng.normal(size=(6, layout.width)).astype(np.float32)
    view = FeatureView(layout, "blocks", blocks=(1,), text=True)
    image = FeatureView(layout, "blocks", blocks=(1,))
    want = np.concatenate([image.apply(x), l2_normalize(x[:, -5:])], axis=1)
    np.testing.assert_allclose(view.apply(x), want, rtol=0, atol=1e-7)
    assert view.dim == 3 + 5
    assert FeatureView.from_dict(json.loads(json.dumps(view.to_dict()))) == view


def test_image_views_take_rows_with_or_without_text(rng: np.random.Generator) -> None:
    layout = FeatureLayout(4, 2, 3, text_dim=5)
    x = rng.normal(size=(3, layout.width)).astype(np.float32)
    view = FeatureView(layout, "embeds")
    np.testing.assert_array_equal(view.apply(x), view.apply(x[:, : layout.image_width]))
    with pytest.raises(ViewError):
        FeatureView(layout, "embeds", text=True).apply(x[:, : layout.image_width])
    with pytest.raises(ViewError):
        FeatureView(FeatureLayout(4, 2, 3), "embeds", text=True)


def test_mlp_numpy_on_image_and_text_matches_torch() -> None:
    torch = pytest.importorskip("torch")
    train = _with_text(synthetic_features(seed=0), seed=0)
    (head,) = fit_heads(train, ("mlp",), FAST).values()
    assert isinstance(head, MlpHead)
    assert head.view.text
    x = _with_text(synthetic_features(seed=3), seed=3).x
    with torch.no_grad():
        want = head.to_torch()(torch.from_numpy(head.view.apply(x))).numpy().ravel()
    np.testing.assert_allclose(head.score(x), want, rtol=0, atol=1e-5)


@pytest.fixture(scope="module")
def text_artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train = _with_text(synthetic_features(seed=0), seed=0)
    cal = _with_text(synthetic_features(seed=1), seed=1)
    heads = fit_heads(train, ("knn_k1", "linear_probe", "mlp"), FAST)
    cals = calibrate_heads(heads, cal, FAST)
    out = tmp_path_factory.mktemp("text_artifacts")
    record = EncoderRecord.from_info(
        fake_info(),
        "clip_default@1",
        TextSource.parse("caption"),
        FakeTextEncoder().info,
    )
    write_artifacts(out, record, heads, cals, "mlp", {"test": True})
    return out


def test_manifest_records_text_source_and_round_trips(text_artifacts: Path) -> None:
    rec = read_manifest(text_artifacts).encoder
    assert (rec.text_source, rec.text_dim) == ("caption", TEXT_DIM)
    assert rec.text_tower is not None
    assert rec.text_tower.id == "fake-text"
    assert rec.layout.text_dim == TEXT_DIM
    arts = load_artifacts(text_artifacts, fake_info(), "clip_default@1")
    assert manifest_summary(arts.manifest)["text_source"] == "caption"
    mlp = arts.heads["mlp"]
    assert isinstance(mlp, MlpHead)
    assert mlp.view.text
    assert not arts.heads["linear_probe"].view.text  # type: ignore[attr-defined]


def test_image_only_manifest_has_no_text_fields() -> None:
    doc = json.loads(EncoderRecord.from_info(fake_info(), "p@1").model_dump_json())
    assert "text_tower" not in doc
    assert (doc["text_source"], doc["text_dim"]) == ("none", 0)


def test_text_source_without_tower_is_refused() -> None:
    with pytest.raises(ArtifactMismatchError, match="text tower"):
        EncoderRecord.from_info(fake_info(), "p@1", TextSource.parse("caption"))


def test_other_text_tower_is_refused(text_artifacts: Path) -> None:
    manifest = read_manifest(text_artifacts)
    check_text_tower(manifest, FakeTextEncoder().info)
    for other in (None, FakeTextEncoder(weights="3" * 64).info):
        with pytest.raises(ArtifactMismatchError, match="text tower"):
            check_text_tower(manifest, other)


def test_detector_caption_moves_only_the_mlp(text_artifacts: Path) -> None:
    det = Detector.open(FakeEncoder(), text_artifacts, FakeTextEncoder())
    pixels = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3), np.uint8)
    a = det.score_pixels(pixels, ["a cat", None])
    b = det.score_pixels(pixels, ["a dog", None])
    assert a[0].head_scores["mlp"] != b[0].head_scores["mlp"]
    assert a[1].head_scores == b[1].head_scores  # no caption: the empty string
    assert a[0].head_scores["knn_k1"] == b[0].head_scores["knn_k1"]
    assert a[0].versions["text_source"] == "caption"


def test_text_branch_attach_reads_sidecar_captions(tmp_path: Path) -> None:
    fs = synthetic_features(n_per_class=2, families=("a",))
    for p in fs.paths[:2]:
        (tmp_path / p).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / p).with_suffix(".txt").write_text(f"caption of {p}\n")
    branch = TextBranch(TextSource.parse("caption"), FakeTextEncoder())
    out = branch.attach(fs, tmp_path)
    layout = FeatureLayout.from_dict(out.meta.layout)
    assert layout.text_dim == TEXT_DIM
    assert out.x.shape == (4, layout.width)
    want = FakeTextEncoder().encode_text([f"caption of {fs.paths[0]}", ""])
    np.testing.assert_array_equal(layout.text(out.x)[[0, 3]], want)
    assert branch.provenance([tmp_path], [out])["captioned"] == 2


def _tiny_bench(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "cal"):
        for fam in ("fa", "fb"):
            for cls, level in (("0_real", 60), ("1_fake", 190)):
                folder = root / split / fam / cls
                folder.mkdir(parents=True)
                for i in range(6):
                    noise = rng.integers(0, 60, (32, 32, 3))
                    Image.fromarray((noise + level).astype(np.uint8)).save(
                        folder / f"{i}.png"
                    )
                    if i % 2 == 0:  # half the images have a caption sidecar
                        (folder / f"{i}.txt").write_text(f"{cls} {i}")
    return root


def test_train_and_save_with_a_caption_source(tmp_path: Path) -> None:
    bench = _tiny_bench(tmp_path / "bench")
    settings = ServingSettings(home=tmp_path / "home")
    branch = TextBranch(TextSource.parse("caption"), FakeTextEncoder())
    out = tmp_path / "artifacts"
    heads = ["knn_k1", "linear_probe", "mlp"]
    train_and_save(
        settings, FakeEncoder(), bench, out, heads, "mlp", FAST, False, text=branch
    )
    manifest = read_manifest(out)
    assert manifest.encoder.text_source == "caption"
    assert manifest.training["text"]["captioned"] == 24  # of 48 images
    det = Detector.open(FakeEncoder(), out, FakeTextEncoder())
    img = bench / "cal" / "fa" / "1_fake" / "1.png"
    a, b = det.score_file(img, "a cat"), det.score_file(img, "a dog")
    assert a["head_scores"]["mlp"] != b["head_scores"]["mlp"]
    assert a["versions"]["text_source"] == "caption"


def test_cli_rejects_an_unknown_text_source(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["train", "--text-source", "subtitles"]) == 2
    assert "text source 'subtitles'" in caplog.text
