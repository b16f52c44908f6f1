"""Unit tests for serving.evaluation.dataset (a fake UFD tree in tmp_path)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from serving.errors import DatasetError
from serving.evaluation.dataset import DIFFUSION_REAL_POOLS, Domain, discover_domains


def _touch(folder: Path, n: int, pattern: str = "{i:04d}.png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / pattern.format(i=i) for i in range(n)]
    for p in paths:
        p.write_bytes(b"")
    return paths


@pytest.fixture
def ufd_root(tmp_path: Path) -> Path:
    root = tmp_path / "test"
    for cat in ("car", "cat"):  # category subfolders
        _touch(root / "progan" / cat / "0_real", 30)
        _touch(root / "progan" / cat / "1_fake", 30, "img.{i}.v2.JPG")  # multi-dot
    _touch(root / "san" / "0_real", 12, "{i}.JPEG")  # a < cap class
    _touch(root / "san" / "1_fake", 12, "{i}.webp")
    (root / "san" / "1_fake" / "notes.txt").write_text("x")
    diff = root / "diffusion_datasets"
    _touch(diff / "imagenet" / "0_real", 40)
    _touch(diff / "laion" / "0_real", 25, "{i}.jpg")
    _touch(diff / "guided" / "1_fake", 40)
    _touch(diff / "ldm_200" / "1_fake", 50)
    _touch(diff / "dalle" / "1_fake", 10, "{i}.BMP")
    return root


def test_discover_domains_finds_both_layouts_in_ufd_order(ufd_root: Path) -> None:
    domains = discover_domains(ufd_root, max_per_class=None)
    assert [d.name for d in domains] == ["progan", "san", "guided", "ldm_200", "dalle"]
    by = {d.name: d for d in domains}
    assert (len(by["progan"].real), len(by["progan"].fake)) == (60, 60)
    assert len(by["san"].fake) == 12  # notes.txt ignored, .webp counted
    assert len(by["dalle"].fake) == 10  # uppercase .BMP counted


def test_discover_domains_pairs_diffusion_reals(ufd_root: Path) -> None:
    by = {d.name: d for d in discover_domains(ufd_root, max_per_class=None)}
    assert all(p.parent.parent.name == "imagenet" for p in by["guided"].real)
    assert by["ldm_200"].real == by["dalle"].real
    assert all(p.parent.parent.name == "laion" for p in by["dalle"].real)
    assert DIFFUSION_REAL_POOLS["guided"] == "imagenet"


def test_discover_domains_subsamples_with_seed_zero(ufd_root: Path) -> None:
    domains = discover_domains(ufd_root, max_per_class=20)
    by = {d.name: d for d in domains}
    progan_real = sorted((ufd_root / "progan").glob("*/0_real/*"))
    expected = tuple(sorted(random.Random(0).sample(progan_real, 20)))
    assert by["progan"].real == expected
    assert by["progan"].n_real_total == 60
    assert discover_domains(ufd_root, max_per_class=20) == domains


def test_discover_domains_keeps_small_class_whole(ufd_root: Path) -> None:
    by = {d.name: d for d in discover_domains(ufd_root, max_per_class=1000)}
    assert (len(by["san"].real), len(by["san"].fake)) == (12, 12)  # no drop to 100
    assert (len(by["ldm_200"].real), len(by["ldm_200"].fake)) == (25, 50)
    assert by["ldm_200"].n_fake_total == 50


def test_discover_domains_reads_diffusion_root_and_single_domain(
    ufd_root: Path,
) -> None:
    names = [d.name for d in discover_domains(ufd_root / "diffusion_datasets")]
    assert names == ["guided", "ldm_200", "dalle"]
    (single,) = discover_domains(ufd_root / "san")
    assert single.name == "san"


def test_discover_domains_benchmark_layout(tmp_path: Path) -> None:
    for fam in ("sdxl", "flux"):
        _touch(tmp_path / "cal" / fam / "0_real", 3, "{i}.jpg")
        _touch(tmp_path / "cal" / fam / "1_fake", 4, "{i}.png")
    domains = discover_domains(tmp_path / "cal")
    assert [(d.name, len(d.real), len(d.fake)) for d in domains] == [
        ("flux", 3, 4),
        ("sdxl", 3, 4),
    ]


def test_discover_domains_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError):
        discover_domains(tmp_path / "missing")
    (tmp_path / "empty" / "x").mkdir(parents=True)
    with pytest.raises(DatasetError):
        discover_domains(tmp_path / "empty")
    _touch(tmp_path / "half" / "mystery" / "1_fake", 2)
    with pytest.raises(DatasetError):
        discover_domains(tmp_path / "half")
    _touch(tmp_path / "nopool" / "guided" / "1_fake", 2)  # imagenet pool missing
    with pytest.raises(DatasetError):
        discover_domains(tmp_path / "nopool")
    with pytest.raises(DatasetError):
        Domain("x", real=(), fake=(Path("a.png"),))
