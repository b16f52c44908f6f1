"""Adapter: builds the offline real-vs-generated benchmark (``synthguard bench-data``).

Layout: ``<out>/<split>/<family>/{0_real,1_fake}/<sha256 prefix>.jpg`` plus
``<out>/bench_manifest.json`` and ``<out>/generators/*.safetensors``. Every family
pairs fakes from a real neural generator with reals that went through the same
resolution path, both cut from the photos of one split only (split by photo group),
the same number of times per photo, and written by one JPEG encoder call.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from tqdm import tqdm

from serving.benchdata import autoencoders as ae
from serving.benchdata import photos as ph
from serving.benchdata.dcgan import OUTPUT_SIZE as DCGAN_SIZE
from serving.benchdata.dcgan import DcganFaces
from serving.benchdata.esrgan import NPM_SPEC, EsrganX2
from serving.benchdata.jpeg import encoder_settings, write_jpeg
from serving.benchdata.photos import SPLITS, PhotoRecord
from serving.errors import DatasetError, InvalidInputError

logger = logging.getLogger(__name__)

AE_FAMILIES: Final = {f"ae_{u}": u for u in ae.UPSAMPLERS}
FAMILIES: Final = ("dcgan_faces", "esrgan_x2", *AE_FAMILIES)
LABEL_DIRS: Final = ("0_real", "1_fake")
MANIFEST_NAME: Final = "bench_manifest.json"
SCHEMA: Final = "synthguard.benchdata/1"
PIPELINES: Final = {
    "dcgan_faces": "fake: DCGAN 64 px face -> bicubic 256. real: 128 px photo crop -> "
    "bicubic 64 (2x, near the ~2.8x 178->64 px of the DCGAN's CelebA faces; 256 px "
    "crops, 4x, held more detail per pixel: JPEG-size AUC 0.37, n=200) -> bicubic 256",
    "esrgan_x2": "256 px photo crop -> bicubic 128; fake: ESRGAN 2x, real: bicubic 2x",
    **{f"ae_{u}": f"fake: {u} autoencoder of a 256 px photo crop; real: another 256 "
       "px crop of the same photo" for u in ae.UPSAMPLERS},
}  # fmt: skip
KNOWN_CONFOUNDS: Final = {
    "dcgan_faces": [
        "content: fakes are DCGAN faces (CelebA-like), reals generic photo crops through "
        "the same 64 px path; a detector may learn faces vs non-faces, not fake vs real "
        "(faces also have more contrast: pixel-std AUC ~0.77 at seed 0, n=48)"
    ],
}
DCGAN_REAL_CROP: Final = 2 * DCGAN_SIZE
ESRGAN_SOURCE: Final = {"source": f"npm {NPM_SPEC}", "licence": "MIT"}
Pair = tuple[Image.Image, Image.Image]
Rng = np.random.Generator
Face = npt.NDArray[np.uint8] | None
Json = dict[str, Any]
Photos = list[PhotoRecord]
Splits = dict[str, Photos]


@dataclass(frozen=True)
class BenchConfig:
    """Everything that decides the bytes of a build.

    Attributes:
        seed: master seed of crops, latents and autoencoder training.
        n_train: reals (and as many fakes) per family in train; n_cal, n_test: same.
        families: families to build, a subset of ``FAMILIES``.
        jpeg_quality: the one JPEG quality of every file.
        image_size: side of every final image (a multiple of 64).
        ae_steps: optimiser steps per autoencoder; ae_batch: patches per step;
            ae_patch: patch side; ae_train_patches: patches cut from train photos;
            ae_heldout_patches: patches cut from cal and test photos (PSNR only).
        crop_short_sides: photos are cropped rescaled to one of these short sides.
        torch_threads: CPU threads for torch during the build.
    """

    seed: int = 0
    n_train: int = 64
    n_cal: int = 24
    n_test: int = 48
    families: tuple[str, ...] = FAMILIES
    jpeg_quality: int = 90
    image_size: int = 256
    ae_steps: int = 600
    ae_batch: int = 8
    ae_patch: int = 64
    ae_train_patches: int = 2048
    ae_heldout_patches: int = 256
    crop_short_sides: tuple[int, ...] = (256, 384, 512)
    torch_threads: int = 2

    def __post_init__(self) -> None:
        if not self.families or not set(self.families) <= set(FAMILIES):
            raise InvalidInputError(f"families: a non-empty subset of {FAMILIES}")
        if min(self.n_train, self.n_cal, self.n_test) < 1:
            raise InvalidInputError("every split needs at least one image per class")
        if self.image_size % DCGAN_SIZE or self.ae_patch % ae.DOWNSAMPLE:
            raise InvalidInputError("image_size: a multiple of 64; ae_patch: of 4")

    @classmethod
    def tiny(cls, seed: int = 0, families: tuple[str, ...] = FAMILIES) -> BenchConfig:
        """A seconds-long build for unit tests (few images, a few AE steps)."""
        ae_budget = {"ae_steps": 2, "ae_train_patches": 16, "ae_heldout_patches": 16}
        return cls(seed, 1, 1, 1, families, crop_short_sides=(256,), **ae_budget)

    def count(self, split: str) -> int:
        """Images per class and family in ``split``."""
        return {"train": self.n_train, "cal": self.n_cal, "test": self.n_test}[split]


@dataclass
class _Context:
    config: BenchConfig
    out: Path
    sampler: ph.CropSampler
    dcgan: DcganFaces | None = None
    esrgan: EsrganX2 | None = None
    autoencoders: dict[str, ae.ConvAutoencoder] = field(default_factory=dict)
    generators: dict[str, dict[str, Any]] = field(default_factory=dict)
    bar: Any = None


def _rng(seed: int, *names: str) -> np.random.Generator:
    """An independent stream per (seed, names), stable whatever else is built."""
    key = tuple(int(hashlib.sha256(n.encode()).hexdigest()[:8], 16) for n in names)
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=key))


def _resize(img: Image.Image, size: int) -> Image.Image:
    return img.resize((size, size), Image.Resampling.BICUBIC)


def _pair(ctx: _Context, family: str, photo: PhotoRecord, rng: Rng, face: Face) -> Pair:
    """One (real, fake) of ``family``; every crop comes from ``photo``'s split."""
    size, crop = ctx.config.image_size, ctx.sampler.crop
    if family == "dcgan_faces" and face is not None:
        real_small = _resize(crop(photo, DCGAN_REAL_CROP, rng), DCGAN_SIZE)
        return _resize(real_small, size), _resize(Image.fromarray(face), size)
    if family == "esrgan_x2" and ctx.esrgan is not None:
        real_half = _resize(crop(photo, size, rng), size // 2)
        fake_half = _resize(crop(photo, size, rng), size // 2)
        return _resize(real_half, size), ctx.esrgan.upscale(fake_half)
    if family in ctx.autoencoders:
        real, source = crop(photo, size, rng), crop(photo, size, rng)
        return real, ae.reconstruct_image(ctx.autoencoders[family], source)
    raise InvalidInputError(f"family {family!r} has no generator loaded")


def _build_split(ctx: _Context, family: str, split: str, photos: Photos) -> list[Json]:
    """Write ``count(split)`` reals and fakes; photos are used round-robin (balanced)."""
    cfg = ctx.config
    rng = _rng(cfg.seed, family, split)
    faces: Iterator[Face] = iter(())
    if family == "dcgan_faces" and ctx.dcgan is not None:
        faces = iter(ctx.dcgan.sample(cfg.count(split), int(rng.integers(2**31))))
    start = int(rng.integers(len(photos)))
    records: list[Json] = []
    base = {"split": split, "family": family}
    for i in range(cfg.count(split)):
        photo = photos[(start + i) % len(photos)]
        real, fake = _pair(ctx, family, photo, rng, next(faces, None))
        fake_src = None if family == "dcgan_faces" else photo.photo_id
        for label, img, src in ((0, real, photo.photo_id), (1, fake, fake_src)):
            target = ctx.out / split / family / LABEL_DIRS[label]
            rel = write_jpeg(img, target, cfg.jpeg_quality).relative_to(ctx.out)
            records.append(
                {**base, "path": rel.as_posix(), "label": label, "photo_id": src}
            )
        ctx.bar.update(2)
    return records


def _write_images(ctx: _Context, splits: Splits, progress: bool) -> list[Json]:
    """Every family and split, under one progress bar."""
    cfg, images = ctx.config, list[Json]()
    total = 2 * len(cfg.families) * sum(cfg.count(s) for s in SPLITS)
    with tqdm(total=total, desc="bench images", disable=not progress) as ctx.bar:
        for family, split in itertools.product(cfg.families, SPLITS):
            ctx.bar.set_postfix_str(f"{split}/{family}")
            images += _build_split(ctx, family, split, splits[split])
    return images


def _patches(ctx: _Context, photos: Photos, n: int, name: str) -> ae.UInt8Images:
    rng, size = _rng(ctx.config.seed, "ae_patches", name), ctx.config.ae_patch
    crops = [ctx.sampler.crop(photos[i % len(photos)], size, rng) for i in range(n)]
    return ae.stack_images(crops)


def _train_autoencoders(ctx: _Context, splits: Splits, progress: bool) -> None:
    """Train the AE variants on train-split patches; PSNR also on cal+test patches."""
    cfg = ctx.config
    wanted = [f for f in cfg.families if f in AE_FAMILIES]
    if not wanted:
        return
    train = _patches(ctx, splits["train"], cfg.ae_train_patches, "train")
    others = splits["cal"] + splits["test"]
    heldout = _patches(ctx, others, cfg.ae_heldout_patches, "heldout")
    for family in tqdm(wanted, desc="train autoencoders", disable=not progress):
        seed = int(_rng(cfg.seed, family, "weights").integers(2**31))
        path = ctx.out / "generators" / f"{family}.safetensors"
        budget, data = (cfg.ae_steps, cfg.ae_batch), (train, heldout)
        model, record = ae.fit_and_save(AE_FAMILIES[family], data, budget, seed, path)
        ctx.autoencoders[family] = model
        ctx.generators[family] = {"file": f"generators/{path.name}", **record}
        logger.info("trained %s: %s", family, record)


def _load_generators(ctx: _Context, esrgan_dir: Path | None) -> None:
    if "dcgan_faces" in ctx.config.families:
        ctx.dcgan = DcganFaces()
        ctx.generators["dcgan_faces"] = ctx.dcgan.provenance()
    if "esrgan_x2" in ctx.config.families:
        ctx.esrgan = EsrganX2(esrgan_dir)
        ids = {
            "model_id": ctx.esrgan.model_id,
            "weights_sha256": ctx.esrgan.weights_sha256,
        }
        ctx.generators["esrgan_x2"] = {**ids, **ESRGAN_SOURCE}


def _manifest(ctx: _Context, splits: Splits, images: list[Json], secs: float) -> Json:
    cfg = ctx.config
    rows = [(s, p) for s in SPLITS for p in splits[s]]
    photos = [{**asdict(p), "path": p.path.name, "split": s} for s, p in rows]
    fams, sizes = cfg.families, [(s, cfg.count(s)) for s in SPLITS]
    counts = {s: {f: dict.fromkeys(LABEL_DIRS, n) for f in fams} for s, n in sizes}
    confounds = {f: KNOWN_CONFOUNDS[f] for f in cfg.families if f in KNOWN_CONFOUNDS}
    return {
        "schema": SCHEMA,
        "layout": "<split>/<family>/{0_real,1_fake}/<sha256[:16]>.jpg",
        "labels": {"0_real": 0, "1_fake": 1},
        "config": asdict(cfg),
        "jpeg": encoder_settings(cfg.jpeg_quality),
        "photos": photos,
        "generators": ctx.generators,
        "counts": counts,
        "pipelines": {f: PIPELINES[f] for f in cfg.families},
        "known_confounds": confounds,
        "versions": {p: version(p) for p in ("torch", "numpy", "pillow")},
        "build_seconds": round(secs, 1),
        "images": images,
    }


def build_benchmark(
    out: Path,
    config: BenchConfig,
    progress: bool = True,
    esrgan_dir: Path | None = None,
    extra_photo_dirs: Sequence[Path] = (),
) -> Json:
    """Build the benchmark into ``out`` and write ``out/bench_manifest.json``.

    Args:
        out: destination; must not exist or be empty.
        config: what to build (counts, families, seed, encoder, AE budget).
        progress: show tqdm progress bars.
        esrgan_dir: the UpscalerJS model dir (see ``find_esrgan_model``); default:
            ``.cache/assets/upscalerjs-default-model/package/models``.
        extra_photo_dirs: extracted Debian photo packages (``find_debian_dirs``).

    Returns:
        The manifest (also written as JSON).

    Raises:
        DatasetError: if ``out`` is not empty or the photos cannot be split.
        MissingWeightsError: if a requested generator's weights are absent.
    """
    t0 = time.perf_counter()
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} is not empty; refusing to mix two builds")
    splits = ph.assign_splits(ph.discover_photos(extra_photo_dirs))
    ctx = _Context(config, out, ph.CropSampler(config.crop_short_sides))
    threads = torch.get_num_threads()
    torch.set_num_threads(config.torch_threads)
    try:
        _load_generators(ctx, esrgan_dir)
        _train_autoencoders(ctx, splits, progress)
        images = _write_images(ctx, splits, progress)
    finally:
        torch.set_num_threads(threads)
    manifest = _manifest(ctx, splits, images, time.perf_counter() - t0)
    text = json.dumps(manifest, indent=1) + "\n"
    (out / MANIFEST_NAME).write_text(text, encoding="utf-8")
    logger.info("built %s: %d images", out, len(images))
    return manifest
