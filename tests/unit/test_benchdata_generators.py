"""Unit tests of the benchmark's trained generators, format paths and augmentation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from serving.benchdata import augment, formats, sr_x2
from serving.benchdata.diffusion import Denoiser, SdeditSchedule, sdedit, train_denoiser
from serving.benchdata.subpixel import Espcn, downscale, train_espcn, upscale
from serving.benchdata.vae import LatentVae, generate, train_vae
from serving.errors import InvalidInputError


def _photo_like(side: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 200, side)[None, :, None] + np.zeros((side, 1, 3))
    arr = ramp + rng.normal(0, 12, (side, side, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _patches(n: int, side: int) -> np.ndarray:
    return np.stack([np.asarray(_photo_like(side, i)) for i in range(n)])


def test_denoiser_keeps_shape_and_sdedit_is_seeded() -> None:
    model = Denoiser().eval()
    x = torch.zeros(2, 3, 32, 32)
    assert model(x, torch.tensor([0.1, 0.01])).shape == x.shape
    img = _photo_like(56)
    sched = SdeditSchedule(0.1, 0.01, 3)
    a, b, c = (
        sdedit(model, img, sched, 1),
        sdedit(model, img, sched, 1),
        sdedit(model, img, sched, 2),
    )
    assert a.size == img.size
    assert a.tobytes() == b.tobytes() != c.tobytes()
    with pytest.raises(InvalidInputError):
        sdedit(model, _photo_like(30), sched, 0)


def test_sdedit_schedule_is_geometric_and_validated() -> None:
    sigmas = SdeditSchedule(0.16, 0.01, 5).sigmas()
    assert sigmas[0] == pytest.approx(0.16)
    assert sigmas[-1] == pytest.approx(0.01)
    ratios = np.array(sigmas[1:]) / np.array(sigmas[:-1])
    assert np.allclose(ratios, ratios[0])
    with pytest.raises(InvalidInputError):
        SdeditSchedule(0.01, 0.1, 3).sigmas()


def test_train_denoiser_is_deterministic() -> None:
    patches = _patches(8, 16)
    a, loss_a = train_denoiser(patches, (3, 4), seed=5)
    b, loss_b = train_denoiser(patches, (3, 4), seed=5)
    assert loss_a == loss_b
    for (ka, va), (kb, vb) in zip(
        a.state_dict().items(), b.state_dict().items(), strict=True
    ):
        assert ka == kb
        assert torch.equal(va, vb)


def test_vae_decodes_a_sampled_latent_of_the_input_size() -> None:
    model = LatentVae().eval()
    mean, logvar = model.encode(torch.zeros(1, 3, 32, 32))
    assert mean.shape == logvar.shape == (1, 12, 8, 8)
    img = _photo_like(56)
    out = generate(model, img, seed=3)
    assert out.size == img.size
    assert out.tobytes() == generate(model, img, seed=3).tobytes()
    trained, loss = train_vae(_patches(8, 16), (2, 4), seed=0)
    assert np.isfinite(loss)
    assert not trained.training


def test_espcn_upscales_4x() -> None:
    model = Espcn().eval()
    assert model(torch.zeros(1, 3, 14, 14)).shape == (1, 3, 56, 56)
    low = downscale(_photo_like(64))
    assert low.size == (16, 16)
    assert upscale(model, low).size == (64, 64)
    _, loss = train_espcn(_patches(8, 32), (2, 4), seed=0)
    assert np.isfinite(loss)
    with pytest.raises(InvalidInputError):
        downscale(_photo_like(30))


@pytest.mark.parametrize("design", sorted(sr_x2.DESIGNS))
def test_sr_x2_designs_upscale_2x_train_seeded_and_record_psnr(
    design: str, tmp_path: Path
) -> None:
    assert sr_x2.SrX2(design)(torch.zeros(1, 3, 12, 20)).shape == (1, 3, 24, 40)
    patches = (_patches(8, 32), _patches(4, 32))

    def fit(name: str) -> tuple[torch.nn.Module, dict[str, object]]:
        return sr_x2.fit_and_save(design, patches, (2, 4), 7, tmp_path / name)

    model, record = fit("a.safetensors")
    _, again = fit("b.safetensors")
    assert record["weights_sha256"] == again["weights_sha256"]
    assert record["model_id"] == f"synthguard/{design}_x2@seed7"
    assert {"psnr_db_heldout", "psnr_db_heldout_bicubic"} <= set(record)
    assert not model.training
    assert upscale(model, downscale(_photo_like(64), 2)).size == (64, 64)


def test_sr_x2_rejects_an_unknown_design() -> None:
    with pytest.raises(InvalidInputError, match="design"):
        sr_x2.SrX2("lanczos")


def test_format_mix_is_mostly_native_png_and_spans_containers() -> None:
    rng = np.random.default_rng(0)
    paths = [formats.draw_path(rng) for _ in range(2000)]
    native = sum(p.container == "png" and p.side == 224 for p in paths) / len(paths)
    assert native >= 0.40
    assert {p.container for p in paths} == {"png", "jpeg", "webp"}
    assert {p.side for p in paths} == set(formats.SIDES)
    qualities = {p.quality for p in paths if p.container == "jpeg"}
    assert qualities == set(formats.JPEG_QUALITIES)
    assert formats.draw_path(rng, native_only=True) == formats.FormatPath("png", 224)


@pytest.mark.parametrize(
    "path",
    [
        formats.FormatPath("png", 224),
        formats.FormatPath("jpeg", 256, 75),
        formats.FormatPath("webp", 320, 90),
    ],
)
def test_encode_round_trips_format_and_drops_metadata(
    path: formats.FormatPath,
) -> None:
    img = _photo_like(path.side)
    img.info["exif"] = b"Exif\x00\x00junk"
    with Image.open(io.BytesIO(formats.encode(img, path))) as im:
        assert (
            im.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[path.container]
        )
        assert im.size == (path.side, path.side)
        assert "exif" not in im.info
    with pytest.raises(InvalidInputError):
        formats.encode(_photo_like(path.side + 4), path)


def test_format_path_validates_quality() -> None:
    with pytest.raises(InvalidInputError):
        formats.FormatPath("png", 224, 90)
    with pytest.raises(InvalidInputError):
        formats.FormatPath("jpeg", 224)
    with pytest.raises(InvalidInputError):
        formats.FormatPath("gif", 224)


def test_augmentation_draws_follow_the_recipe() -> None:
    rng = np.random.default_rng(1)
    draws = [augment.draw(rng) for _ in range(2000)]
    blur = [d.blur_sigma for d in draws if d.blur_sigma is not None]
    jpeg = [d.jpeg_quality for d in draws if d.jpeg_quality is not None]
    assert 0.45 < len(blur) / len(draws) < 0.55
    assert 0.45 < len(jpeg) / len(draws) < 0.55
    assert min(blur) >= 0.0
    assert max(blur) <= 3.0
    assert min(jpeg) >= 30
    assert max(jpeg) <= 100
    both = sum(d.blur_sigma is not None and d.jpeg_quality is not None for d in draws)
    assert 0.2 < both / len(draws) < 0.3  # independent


def test_augmentation_apply_blurs_and_compresses() -> None:
    img = _photo_like(64)
    assert augment.Augmentation().apply(img).tobytes() == img.tobytes()
    blurred = augment.Augmentation(blur_sigma=2.0).apply(img)
    assert np.asarray(blurred, float).std() < np.asarray(img, float).std()
    jpeg = augment.Augmentation(jpeg_quality=30).apply(img)
    assert jpeg.mode == "RGB"
    assert jpeg.size == img.size
    assert jpeg.tobytes() != img.tobytes()
