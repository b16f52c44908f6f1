"""Adapter: real colour photographs shipped inside installed or fetched packages.

Sources, in order: PyPI wheels already installed (scikit-image, scikit-learn,
matplotlib), then optional extracted Debian packages (``opencv-doc`` data and
scene-text photos, ``lomiri-wallpapers-16.04``, ``mate-backgrounds``,
``palapeli-data``, ``plasma-workspace-wallpapers``) found under the directories
passed in, usually ``.cache/assets/debian`` (see ``scripts/fetch_assets.sh``).
Only colour photographs are kept: grey sources, renders, text, chessboards and
manipulated images are left out by name, a chroma check drops any grey file left.
Views of one scene (stereo, viewpoint pairs) share a ``group_id``: never split.
"""

from __future__ import annotations

import bisect
import fnmatch
import hashlib
import importlib.metadata
import importlib.util
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
from PIL import Image

from serving.errors import DatasetError, MissingWeightsError

logger = logging.getLogger(__name__)

SPLITS: Final = ("train", "cal", "test")
SPLIT_FRACTIONS: Final = (0.60, 0.15, 0.25)
MIN_CHROMA: Final = 4.0  # mean |R-G| + |G-B| in 8-bit levels; grey files score 0
MIN_CROP_STD: Final = 4.0  # grey-level std of a flat crop (black border, clear sky)
DEBIAN_RELDIR: Final = Path(".cache/assets/debian")

# skimage.data colour photographs (camera, moon, coins, page, text, grass... are grey).
_SKIMAGE: Final = {
    "astronaut.png": ("astronaut", "public domain (NASA)"),
    "chelsea.png": ("chelsea", "CC0 (Stefan van der Walt)"),
    "coffee.png": ("coffee", "CC0 (Rachel Michetti)"),
    "rocket.jpg": ("rocket", "public domain (SpaceX)"),
    "motorcycle_left.png": ("motorcycle", "Middlebury 2014 stereo benchmark"),
    "motorcycle_right.png": ("motorcycle", "Middlebury 2014 stereo benchmark"),
    "hubble_deep_field.jpg": ("hubble_deep_field", "public domain (NASA)"),
    "retina.jpg": ("retina", "CC0 1.0 (Haggstrom)"),
    "ihc.png": ("ihc", "no known copyright restrictions"),
}
# opencv-doc examples/data photographs; views of one scene share a group.
_OPENCV_PAIRS: Final = {
    "aero": ("aero1", "aero3"), "aloe": ("aloeL", "aloeR"), "graf": ("graf1", "graf3"),
    "leuven": ("leuvenA", "leuvenB"), "left_right": ("left", "right"),
    "rubberwhale": ("rubberwhale1", "rubberwhale2"), "ela": ("ela_original",),
}  # fmt: skip
_OPENCV_SINGLES: Final = (
    "apple", "baboon", "board", "building", "butterfly", "chicky_512", "fruits",
    "home", "messi5", "orange", "smarties", "squirrel_cls", "stuff",
)  # fmt: skip
_OPENCV_PHOTOS: Final = {
    **{stem: group for group, stems in _OPENCV_PAIRS.items() for stem in stems},
    **{stem: stem for stem in _OPENCV_SINGLES},
    # examples/text: street scenes with signs (the word/char crops and masks are not).
    **{f"scenetext0{i}": f"scenetext0{i}" for i in range(1, 7)},
}
# Debian package -> photo glob below the package root; then renders/abstract art.
_OPENCV_EXAMPLES: Final = "usr/share/doc/opencv-doc/examples"
_DEBIAN: Final = {
    "opencv-doc": (f"{_OPENCV_EXAMPLES}/data/*", f"{_OPENCV_EXAMPLES}/text/*"),
    "lomiri-wallpapers-16.04": ("usr/share/backgrounds/*.jpg",),
    "mate-backgrounds": ("usr/share/backgrounds/mate/nature/*.jpg",),
    "palapeli-data": ("usr/share/palapeli/collection/*.jpg",),
    "plasma-workspace-wallpapers": ("usr/share/wallpapers/*/contents/images/*",),
}
_NOT_PHOTOS: Final = frozenset(
    {"umang_by_Abhishek_Mudgal", "analogpattern_by_Peter_Nerlich"}
)
# plasma-workspace-wallpapers: the photographs (the other ~19 are renders); one file
# (the largest) per wallpaper; grey ones (ColdRipple, Grey) fall to the chroma check.
_PLASMA_PHOTOS: Final = frozenset(
    {
        "BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow",
        "FallenLeaf", "Grey", "Kite", "OneStandsOut", "Path", "summer_1am",
    }
)  # fmt: skip


@dataclass(frozen=True)
class PhotoRecord:
    """One real photograph and where it came from.

    Attributes:
        photo_id: unique id, ``<source>/<file stem>``.
        group_id: split unit; views of one scene share it.
        path, size: the file on disk and its (width, height) in pixels.
        source: package and version, e.g. ``debian:opencv-doc=4.6.0+dfsg-12``.
        licence, sha256: licence note and hex sha256 of the file bytes.
    """

    photo_id: str
    group_id: str
    path: Path
    source: str
    licence: str
    sha256: str
    size: tuple[int, int]

    def load(self, min_short_side: int | None = None) -> Image.Image:
        """Decode as RGB; JPEG DCT scaling may shrink it to ``min_short_side`` (speed)."""
        with Image.open(self.path) as im:
            if min_short_side is not None:
                s = min_short_side / min(im.size)
                im.draft("RGB", (round(im.width * s), round(im.height * s)))
            return im.convert("RGB")


def _record(
    path: Path, prefix: str, group: str, source: str, note: str, stem: str = ""
) -> PhotoRecord:
    with Image.open(path) as im:
        size = im.size
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    ids = (f"{prefix}/{stem or path.stem}", f"{prefix}/{group}")
    return PhotoRecord(*ids, path, source, note, digest, size)


def _package(module: str, dist: str) -> tuple[Path, str]:
    """Directory and ``dist==version`` of an installed package, never importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"package {dist!r} not installed: pip install {dist}")
    version = importlib.metadata.version(dist)
    return Path(next(iter(spec.submodule_search_locations))), f"{dist}=={version}"


def pypi_photos() -> list[PhotoRecord]:
    """Colour photos bundled with scikit-image, scikit-learn and matplotlib.

    Raises:
        MissingWeightsError: if one of the three packages is not installed.
    """
    sk_dir, sk_src = _package("skimage", "scikit-image")
    out = [
        _record(sk_dir / "data" / name, "skimage", group, sk_src, note)
        for name, (group, note) in _SKIMAGE.items()
    ]
    sl_dir, sl_src = _package("sklearn", "scikit-learn")
    for name in ("china", "flower"):
        path = sl_dir / "datasets" / "images" / f"{name}.jpg"
        out.append(_record(path, "sklearn", name, sl_src, "CC-BY-2.0 (Flickr)"))
    mpl_dir, mpl_src = _package("matplotlib", "matplotlib")
    path = mpl_dir / "mpl-data" / "sample_data" / "grace_hopper.jpg"
    out.append(_record(path, "matplotlib", "grace_hopper", mpl_src, "public domain"))
    return out


def _control_version(pkg_root: Path) -> str:
    control = pkg_root / "DEBIAN" / "control"
    text = control.read_text(encoding="utf-8") if control.is_file() else ""
    match = re.search(r"^Version:\s*(\S+)", text, re.M)
    return match.group(1) if match else "unknown"


def _dep5_licence(copyright_file: Path, relpath: str) -> str:
    """Licence of ``relpath`` in a machine-readable debian/copyright (last match wins)."""
    found = "unknown"
    text = (
        copyright_file.read_text(encoding="utf-8") if copyright_file.is_file() else ""
    )
    for para in text.split("\n\n"):
        values = dict(
            re.findall(r"^(Files|License):[ \t]*(.*(?:\n[ \t].*)*)", para, re.M)
        )
        names = [Path(p).name for p in values.get("Files", "").split()]
        if "License" in values and any(
            fnmatch.fnmatch(Path(relpath).name, n) for n in names
        ):
            found = values["License"].splitlines()[0].strip()
    return f"{found} (per usr/share/doc/<package>/copyright)"


def debian_photos(root: Path) -> list[PhotoRecord]:
    """Photos from the Debian packages extracted below ``root`` (absent ones skipped)."""
    out: list[PhotoRecord] = []
    for pkg, patterns in _DEBIAN.items():
        pkg_root = root / pkg
        if not pkg_root.is_dir():
            logger.info("optional Debian package %s not found under %s", pkg, root)
            continue
        source = f"debian:{pkg}={_control_version(pkg_root)}"
        copyright_file = pkg_root / "usr" / "share" / "doc" / pkg / "copyright"
        files = sorted(p for pattern in patterns for p in pkg_root.glob(pattern))
        for path, stem in _photo_files(pkg, files):
            if pkg == "opencv-doc":
                group = _OPENCV_PHOTOS.get(stem)
            else:
                group = None if stem in _NOT_PHOTOS else stem
            if group is None or path.suffix.lower() not in {".jpg", ".png"}:
                continue
            licence = _dep5_licence(copyright_file, str(path.relative_to(pkg_root)))
            out.append(_record(path, pkg, group, source, licence, stem))
    return out


def _photo_files(pkg: str, paths: list[Path]) -> list[tuple[Path, str]]:
    """(file, photo stem) pairs; plasma wallpapers: the largest file of each photo."""
    if pkg != "plasma-workspace-wallpapers":
        return [(p, p.stem) for p in paths]
    best: dict[str, Path] = {}
    for path in paths:
        name = path.parents[2].name  # <name>/contents/images/<w>x<h>.<ext>
        if name in _PLASMA_PHOTOS and (
            name not in best or path.stat().st_size > best[name].stat().st_size
        ):
            best[name] = path
    return sorted(((p, n) for n, p in best.items()), key=lambda t: t[1])


def is_colour(img: Image.Image) -> bool:
    """True if the image has real chroma (not a grey picture stored as RGB)."""
    small = img.resize((128, 128), Image.Resampling.BOX)
    a = np.asarray(small, dtype=np.float32)
    chroma = np.abs(a[..., 0] - a[..., 1]) + np.abs(a[..., 1] - a[..., 2])
    return float(chroma.mean()) >= MIN_CHROMA


def find_debian_dirs(repo_root: Path) -> list[Path]:
    """``[<repo_root>/.cache/assets/debian]`` if that directory exists, else ``[]``."""
    path = repo_root / DEBIAN_RELDIR
    return [path] if path.is_dir() else []


def discover_photos(extra_dirs: Sequence[Path] = ()) -> list[PhotoRecord]:
    """All usable colour photos: PyPI packages, then Debian packages under ``extra_dirs``.

    Files with identical bytes are kept once; grey files are dropped.

    Raises:
        DatasetError: if an extra directory does not exist.
    """
    records = pypi_photos()
    for root in extra_dirs:
        if not root.is_dir():
            raise DatasetError(f"extra photo directory {root} does not exist")
        records += debian_photos(root)
    seen: set[str] = set()
    out: list[PhotoRecord] = []
    for rec in records:
        if rec.sha256 not in seen and is_colour(rec.load(min_short_side=128)):
            out.append(rec)
        seen.add(rec.sha256)
    logger.info("%d colour photos of %d files", len(out), len(records))
    return out


def _unit_hash(text: str) -> float:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16) / 16**12


def assign_splits(photos: Sequence[PhotoRecord]) -> dict[str, list[PhotoRecord]]:
    """Split photos by group: a hash of ``group_id`` picks train/cal/test (60/15/25 %).

    The assignment of a group never depends on the other photos, except that an
    empty split takes the group whose hash lies nearest to its interval, so that
    every split has photos.

    Raises:
        DatasetError: if there are fewer than three groups.
    """
    groups = sorted({p.group_id for p in photos})
    if len(groups) < len(SPLITS):
        raise DatasetError(f"need >= 3 photo groups to split, got {len(groups)}")
    edges = np.cumsum(SPLIT_FRACTIONS)[:-1].tolist()
    bounds = list(zip([0.0, *edges], [*edges, 1.0], strict=True))
    where = {
        g: min(bisect.bisect(edges, _unit_hash(g)), len(SPLITS) - 1) for g in groups
    }
    for target, (lo, hi) in enumerate(bounds):
        if target in where.values():
            continue
        donor = max(range(len(SPLITS)), key=lambda s: list(where.values()).count(s))
        movable = [g for g in groups if where[g] == donor]
        where[min(movable, key=lambda g: abs(_unit_hash(g) - (lo + hi) / 2))] = target
    return {s: [p for p in photos if SPLITS[where[p.group_id]] == s] for s in SPLITS}


class CropSampler:
    """Random square crops of photos rescaled so that the short side is one of a few sizes.

    Photos are never up-scaled unless smaller than the crop or, after 25 failed
    draws, too small for another distinct crop (then to 1.25x the crop); flat crops
    (black borders, sky) and crops already drawn in this build are redrawn.
    """

    def __init__(self, short_sides: Sequence[int]) -> None:
        self.short_sides = tuple(short_sides)
        self._cache: dict[tuple[str, int], Image.Image] = {}
        self._used: set[tuple[str, int, int, int, int]] = set()

    def _scaled(self, photo: PhotoRecord, short: int) -> Image.Image:
        key = (photo.photo_id, short)
        if key not in self._cache:
            img = photo.load(min_short_side=short)
            s = short / min(img.size)
            size = (max(short, round(img.width * s)), max(short, round(img.height * s)))
            self._cache[key] = img.resize(size, Image.Resampling.BICUBIC)
        return self._cache[key]

    def crop(
        self, photo: PhotoRecord, size: int, rng: np.random.Generator
    ) -> Image.Image:
        """Return a ``size`` x ``size`` RGB crop of ``photo`` at a random scale and place.

        Raises:
            DatasetError: if 50 draws in a row give flat or already drawn crops.
        """
        for attempt in range(50):
            wanted = self.short_sides[int(rng.integers(len(self.short_sides)))]
            short = max(size, min(wanted, *photo.size))
            if attempt >= 25:  # few distinct crops (e.g. 512 px of a 512 px photo)
                short = max(min(photo.size), size + size // 4)
            base = self._scaled(photo, short)
            x = int(rng.integers(0, base.width - size + 1))
            y = int(rng.integers(0, base.height - size + 1))
            key = (photo.photo_id, base.height, x, y, size)
            out = base.crop((x, y, x + size, y + size))
            flat = np.asarray(out.convert("L"), dtype=np.float32).std() < MIN_CROP_STD
            if not flat and key not in self._used:
                self._used.add(key)
                return out
        raise DatasetError(f"no textured {size}px crop found in {photo.photo_id}")
