"""Adapter: extract CLIP features once and cache them on disk (npz + JSON manifest).

A cache entry is keyed by everything that changes the numbers: encoder id and weight
hash, preprocessing policy (with version), perturbation, and the hash of the image
list (relative paths, labels, families and file contents). Heads then retrain in
seconds without touching images again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from serving.encoders.base import ImageEncoder
from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.hashing import sha256_file, sha256_strings
from serving.preprocessing import get_policy, policy_id

logger = logging.getLogger(__name__)

Perturbation = Callable[[Image.Image], Image.Image]
FEATURES_FORMAT = 1


@dataclass(frozen=True)
class ImageItem:
    """One labelled image: `path` relative to the dataset root, label 1 = fake."""

    path: str
    label: int
    family: str


@dataclass(frozen=True)
class FeatureMeta:
    """What produced a feature matrix; stored as the JSON half of a cache entry."""

    encoder_id: str
    encoder_sha256: str
    policy: str
    perturbation: str
    image_list_sha256: str
    n: int
    dim: int
    seconds: float
    format: int = FEATURES_FORMAT


@dataclass(frozen=True)
class FeatureSet:
    """Raw projected CLIP features with their labels and provenance."""

    x: npt.NDArray[np.float32]
    y: npt.NDArray[np.int64]
    paths: tuple[str, ...]
    families: tuple[str, ...]
    meta: FeatureMeta

    def select(self, mask: npt.NDArray[np.bool_]) -> FeatureSet:
        """Return the rows where `mask` is true (same provenance)."""
        idx = np.flatnonzero(mask)
        return FeatureSet(
            x=self.x[idx],
            y=self.y[idx],
            paths=tuple(self.paths[i] for i in idx),
            families=tuple(self.families[i] for i in idx),
            meta=self.meta,
        )

    def family_mask(self, family: str) -> npt.NDArray[np.bool_]:
        """Boolean mask of rows from one generator family / domain."""
        return np.array([f == family for f in self.families], dtype=bool)


def image_list_sha256(root: Path, items: Sequence[ImageItem]) -> str:
    """Hash of the image list: relative path, label, family and file content per item."""
    return sha256_strings(
        f"{it.path}\t{it.label}\t{it.family}\t{sha256_file(root / it.path)}"
        for it in items
    )


def _load(
    path: Path, policy_name: str, perturb: Perturbation | None
) -> npt.NDArray[np.uint8]:
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (OSError, UnidentifiedImageError) as exc:
        raise InvalidInputError(f"cannot decode image {path}: {exc}") from exc
    if perturb is not None:
        rgb = perturb(rgb)
    return get_policy(policy_name)(rgb)


def extract_features(
    root: Path,
    items: Sequence[ImageItem],
    encoder: ImageEncoder,
    policy: str,
    perturbation: tuple[str, Perturbation | None] = ("none", None),
    batch_size: int = 32,
    progress: bool = True,
) -> FeatureSet:
    """Decode, preprocess and encode every item; show a progress bar.

    Args:
        root: Dataset root the item paths are relative to.
        items: Images to encode.
        encoder: CLIP image encoder.
        policy: Preprocessing policy name (see `serving.preprocessing`).
        perturbation: (name, function) applied to the decoded image before the policy.
        batch_size: Images per encoder call.
        progress: Show a tqdm bar.

    Returns:
        The features in item order.
    """
    start = time.perf_counter()
    name, perturb = perturbation
    chunks: list[npt.NDArray[np.float32]] = []
    desc = f"features {policy}/{name}"
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress) as bar:
        for i in range(0, len(items), batch_size):
            batch = items[i : i + batch_size]
            pixels = np.stack([_load(root / it.path, policy, perturb) for it in batch])
            chunks.append(encoder.encode(pixels))
            bar.update(len(batch))
    dim = encoder.info.embed_dim
    x = np.concatenate(chunks) if chunks else np.zeros((0, dim), dtype=np.float32)
    meta = FeatureMeta(
        encoder_id=encoder.info.encoder_id,
        encoder_sha256=encoder.info.weights_sha256,
        policy=policy_id(policy),
        perturbation=name,
        image_list_sha256=image_list_sha256(root, items),
        n=len(items),
        dim=int(x.shape[1]),
        seconds=round(time.perf_counter() - start, 3),
    )
    return FeatureSet(
        x=x.astype(np.float32, copy=False),
        y=np.array([it.label for it in items], dtype=np.int64),
        paths=tuple(it.path for it in items),
        families=tuple(it.family for it in items),
        meta=meta,
    )


def save_features(fs: FeatureSet, stem: Path) -> None:
    """Write ``<stem>.npz`` (arrays) and ``<stem>.json`` (provenance + npz sha256)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    npz = stem.with_suffix(".npz")
    np.savez(
        npz, x=fs.x, y=fs.y, paths=np.array(fs.paths), families=np.array(fs.families)
    )
    doc = {"meta": asdict(fs.meta), "npz": npz.name, "npz_sha256": sha256_file(npz)}
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2))


def load_features(stem: Path) -> FeatureSet:
    """Load a cache entry written by `save_features`, verifying the npz hash.

    Raises:
        ArtifactMismatchError: if the npz does not match its recorded sha256.
    """
    doc = json.loads(stem.with_suffix(".json").read_text())
    npz = stem.with_suffix(".npz")
    if sha256_file(npz) != doc["npz_sha256"]:
        raise ArtifactMismatchError(f"{npz} does not match the sha256 in {stem}.json")
    with np.load(npz, allow_pickle=False) as z:
        return FeatureSet(
            x=z["x"].astype(np.float32, copy=False),
            y=z["y"].astype(np.int64, copy=False),
            paths=tuple(str(p) for p in z["paths"]),
            families=tuple(str(f) for f in z["families"]),
            meta=FeatureMeta(**doc["meta"]),
        )


def cached_features(
    cache_dir: Path,
    root: Path,
    items: Sequence[ImageItem],
    encoder: ImageEncoder,
    policy: str,
    perturbation: tuple[str, Perturbation | None] = ("none", None),
    progress: bool = True,
) -> FeatureSet:
    """Return features from the cache, extracting and storing them on a miss."""
    key = sha256_strings(
        [
            encoder.info.encoder_id,
            encoder.info.weights_sha256,
            policy_id(policy),
            perturbation[0],
            image_list_sha256(root, items),
        ]
    )[:16]
    stem = cache_dir / f"features-{key}"
    if stem.with_suffix(".json").is_file() and stem.with_suffix(".npz").is_file():
        logger.info("feature cache hit %s", stem)
        return load_features(stem)
    fs = extract_features(root, items, encoder, policy, perturbation, progress=progress)
    save_features(fs, stem)
    return fs
