"""Adapter: extract CLIP features once and cache them on disk (npz + JSON manifest).

Each row is the encoder's flat feature row (`serving.scoring.views.FeatureLayout`):
the projected embedding followed by the CLS token of every block, stored as float16
(half the disk; heads re-normalise per block, so the rounding is far below the
int8 encoder's own error). A cache entry is keyed by everything that changes the
numbers: the cache format, encoder id and graph hash (the derived graph's sha256),
CLS-token choice and layout, preprocessing policy (with version), perturbation, and
the hash of the image list (relative paths, labels, families and file contents).
Heads then retrain in seconds without touching images again.
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

from serving.encoders.base import EncoderInfo, ImageEncoder
from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.hashing import sha256_file, sha256_strings
from serving.preprocessing import get_policy, policy_id

logger = logging.getLogger(__name__)

Perturbation = Callable[[Image.Image], Image.Image]
FEATURES_FORMAT = 2


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
    token: str
    layout: dict[str, int]
    format: int = FEATURES_FORMAT

    @classmethod
    def of(
        cls,
        info: EncoderInfo,
        policy: str,
        image_list_sha256: str,
        n: int,
        perturbation: str = "none",
        seconds: float = 0.0,
    ) -> FeatureMeta:
        """Provenance of `n` rows produced by the encoder `info` describes.

        Args:
            info: The encoder's identity and layout.
            policy: Versioned policy id (``clip_default@1``).
            image_list_sha256: Hash of the image list (or any label of the input).
            n: Number of rows.
            perturbation: Name of the perturbation applied before the policy.
            seconds: Extraction time.
        """
        return cls(
            encoder_id=info.encoder_id,
            encoder_sha256=info.weights_sha256,
            policy=policy,
            perturbation=perturbation,
            image_list_sha256=image_list_sha256,
            n=n,
            dim=info.layout.width,
            seconds=round(seconds, 3),
            token=info.token,
            layout=info.layout.to_dict(),
        )


@dataclass(frozen=True)
class FeatureSet:
    """Flat CLIP feature rows (embedding + per-block CLS) with labels and provenance.

    Attributes:
        x: (n, layout.width) float32 flat rows, raw (not normalised).
    """

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
    layout = encoder.info.layout
    chunks: list[npt.NDArray[np.float32]] = []
    desc = f"features {policy}/{name}"
    with tqdm(total=len(items), desc=desc, unit="img", disable=not progress) as bar:
        for i in range(0, len(items), batch_size):
            batch = items[i : i + batch_size]
            pixels = np.stack([_load(root / it.path, policy, perturb) for it in batch])
            chunks.append(encoder.encode(pixels).flat(layout))
            bar.update(len(batch))
    width = layout.width
    x = np.concatenate(chunks) if chunks else np.zeros((0, width), dtype=np.float32)
    meta = FeatureMeta.of(
        encoder.info,
        policy_id(policy),
        image_list_sha256(root, items),
        len(items),
        name,
        time.perf_counter() - start,
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
        npz,
        x=fs.x.astype(np.float16),
        y=fs.y,
        paths=np.array(fs.paths),
        families=np.array(fs.families),
    )
    doc = {"meta": asdict(fs.meta), "npz": npz.name, "npz_sha256": sha256_file(npz)}
    stem.with_suffix(".json").write_text(json.dumps(doc, indent=2))


def load_features(stem: Path) -> FeatureSet:
    """Load a cache entry written by `save_features`, verifying the npz hash.

    Raises:
        ArtifactMismatchError: if the npz does not match its recorded sha256.
    """
    doc = json.loads(stem.with_suffix(".json").read_text())
    if doc.get("meta", {}).get("format") != FEATURES_FORMAT:
        raise ArtifactMismatchError(f"{stem}.json: feature cache of another format")
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
    """Return features from the cache, extracting and storing them on a miss.

    A miss returns the stored entry, as a hit would, not the unrounded extraction.
    """
    info = encoder.info
    key = sha256_strings(
        [
            f"format={FEATURES_FORMAT}",
            info.encoder_id,
            info.weights_sha256,
            info.token,
            json.dumps(info.layout.to_dict(), sort_keys=True),
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
    # what a hit returns (float16-rounded): a first run then trains on the numbers
    # every later run reads, and its artifacts do not depend on a warm cache
    return load_features(stem)
