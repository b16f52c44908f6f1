"""Adapter: read a UnivFD-style test tree into per-domain lists of real and fake images.

Layouts understood (all may sit under one root):

- ``<root>/<domain>/[<category>/...]{0_real,1_fake}/...`` — the CNNDetection / UFD
  test set; images are found recursively (``os.walk``) and a file's class is the
  ``0_real`` / ``1_fake`` folder on its path. Our benchmark split
  ``<root>/<family>/{0_real,1_fake}`` is the same layout (domain = family).
- ``<root>/diffusion_datasets/{imagenet,laion}/0_real`` shared real pools with
  ``<root>/diffusion_datasets/<domain>/1_fake``; `DIFFUSION_REAL_POOLS` says which
  pool each diffusion domain is paired with. ``<root>`` may also be the
  ``diffusion_datasets`` folder itself.
- ``<root>/{0_real,1_fake}`` — a single domain named after ``<root>``.

Differences from UFD's ``validate.py``: extensions are taken from the last suffix,
case-insensitively (multi-dot names work; ``webp`` and ``bmp`` count); a class with
fewer than `max_per_class` images is used whole instead of silently dropping to 100;
real and fake counts need not be equal and are recorded.
"""

from __future__ import annotations

import logging
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from serving.errors import DatasetError

logger = logging.getLogger(__name__)

REAL_DIR: Final = "0_real"
FAKE_DIR: Final = "1_fake"
DIFFUSION_DIR: Final = "diffusion_datasets"
IMAGE_EXTENSIONS: Final = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp"})
# Diffusion domain -> folder holding its real pool (UFD's dataset_paths.py pairing).
DIFFUSION_REAL_POOLS: Final[dict[str, str]] = {
    "guided": "imagenet",
    "ldm_200": "laion",
    "ldm_200_cfg": "laion",
    "ldm_100": "laion",
    "glide_100_27": "laion",
    "glide_50_27": "laion",
    "glide_100_10": "laion",
    "dalle": "laion",
}
# UFD's dataset_paths.py order; other domains follow alphabetically.
UFD_DOMAIN_ORDER: Final = (
    "progan",
    "cyclegan",
    "biggan",
    "stylegan",
    "gaugan",
    "stargan",
    "deepfake",
    "seeingdark",
    "san",
    "crn",
    "imle",
    *DIFFUSION_REAL_POOLS,
)


@dataclass(frozen=True)
class Domain:
    """One test domain (generator family) with its sampled image paths.

    Attributes:
        name: Domain folder name, e.g. ``progan`` or ``ldm_200``.
        real: Sorted paths of the sampled real images (label 0).
        fake: Sorted paths of the sampled fake images (label 1).
        n_real_total: Reals available before subsampling (defaults to ``len(real)``).
        n_fake_total: Fakes available before subsampling (defaults to ``len(fake)``).
    """

    name: str
    real: tuple[Path, ...]
    fake: tuple[Path, ...]
    n_real_total: int = 0
    n_fake_total: int = 0

    def __post_init__(self) -> None:
        if not self.real or not self.fake:
            raise DatasetError(f"domain {self.name!r} needs both real and fake images")
        if self.n_real_total == 0:
            object.__setattr__(self, "n_real_total", len(self.real))
        if self.n_fake_total == 0:
            object.__setattr__(self, "n_fake_total", len(self.fake))


def _is_image(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def _collect(folder: Path) -> tuple[list[Path], list[Path]]:
    """All images under `folder`, split by the innermost 0_real / 1_fake on the path."""
    real: list[Path] = []
    fake: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        parts = Path(dirpath).relative_to(folder).parts
        tags = [p for p in parts if p in (REAL_DIR, FAKE_DIR)]
        if not tags:
            continue
        bucket = real if tags[-1] == REAL_DIR else fake
        bucket.extend(Path(dirpath) / f for f in sorted(filenames) if _is_image(f))
    return sorted(real), sorted(fake)


def _sample(
    paths: list[Path], cap: int | None, seed: int, what: str
) -> tuple[Path, ...]:
    if cap is None or len(paths) <= cap:
        if cap is not None and len(paths) < cap:
            logger.info("%s: %d images (< %d), using all", what, len(paths), cap)
        return tuple(paths)
    return tuple(sorted(random.Random(seed).sample(paths, cap)))


def _domain(
    name: str, real: list[Path], fake: list[Path], cap: int | None, seed: int
) -> Domain:
    return Domain(
        name=name,
        real=_sample(real, cap, seed, f"{name}/{REAL_DIR}"),
        fake=_sample(fake, cap, seed, f"{name}/{FAKE_DIR}"),
        n_real_total=len(real),
        n_fake_total=len(fake),
    )


def _pool_reals(parent: Path, name: str) -> list[Path]:
    pool = parent / DIFFUSION_REAL_POOLS[name]
    real, _ = _collect(pool) if pool.is_dir() else ([], [])
    if not real:
        raise DatasetError(f"{name}: real pool {pool}/{REAL_DIR} is missing or empty")
    return real


def _scan(root: Path, cap: int | None, seed: int) -> list[Domain]:
    """Domains in the sub-folders of `root`, recursing into diffusion_datasets."""
    domains: list[Domain] = []
    pools = set(DIFFUSION_REAL_POOLS.values())
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name == DIFFUSION_DIR:
            domains.extend(_scan(sub, cap, seed))
            continue
        real, fake = _collect(sub)
        if fake and not real and sub.name in DIFFUSION_REAL_POOLS:
            real = _pool_reals(root, sub.name)
        if real and fake:
            domains.append(_domain(sub.name, real, fake, cap, seed))
        elif fake or (real and sub.name not in pools):
            raise DatasetError(
                f"{sub}: has only {REAL_DIR if real else FAKE_DIR} images"
            )
        elif not real:
            logger.debug("skipping %s: no %s/%s images", sub, REAL_DIR, FAKE_DIR)
    return domains


def _order_key(domain: Domain) -> tuple[int, str]:
    if domain.name in UFD_DOMAIN_ORDER:
        return UFD_DOMAIN_ORDER.index(domain.name), domain.name
    return len(UFD_DOMAIN_ORDER), domain.name


def discover_domains(
    root: Path, max_per_class: int | None = 1000, seed: int = 0
) -> list[Domain]:
    """Find every test domain under `root` and subsample each class.

    Each class keeps ``random.Random(seed).sample(sorted_paths, max_per_class)``
    (returned sorted) when it has more than `max_per_class` images, else all of them.
    Diffusion domains sharing a real pool get the same real sample.

    Args:
        root: A UFD test root, a ``diffusion_datasets`` folder, one benchmark split
            (``<bench>/<split>``), or a single ``{0_real,1_fake}`` domain folder.
        max_per_class: Cap per class; None keeps everything.
        seed: Seed of the per-class sample.

    Returns:
        Domains in UFD's order, then other names alphabetically.

    Raises:
        DatasetError: `root` is not a folder, holds no domain, a domain has only one
            class (and no known real pool), or two domains share a name.
    """
    if max_per_class is not None and max_per_class < 1:
        raise DatasetError(f"max_per_class must be positive, got {max_per_class}")
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory")
    if (root / REAL_DIR).is_dir() or (root / FAKE_DIR).is_dir():
        real, fake = _collect(root)
        if not (real and fake):
            raise DatasetError(f"{root}: needs both {REAL_DIR} and {FAKE_DIR} images")
        return [_domain(root.name, real, fake, max_per_class, seed)]
    domains = _scan(root, max_per_class, seed)
    if not domains:
        raise DatasetError(f"no {REAL_DIR}/{FAKE_DIR} domains under {root}")
    names = [d.name for d in domains]
    if len(set(names)) != len(names):
        raise DatasetError(f"duplicate domain names under {root}: {sorted(names)}")
    for d in domains:
        logger.info(
            "%s: %d/%d real, %d/%d fake",
            d.name,
            len(d.real),
            d.n_real_total,
            len(d.fake),
            d.n_fake_total,
        )
    return sorted(domains, key=_order_key)
