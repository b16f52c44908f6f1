"""Benchmark: horizontal flips for the probe, in training and at test time.

UnivFD and RINE train with random horizontal flips; the shipped probe sees each
training image once, unflipped. This extracts (and caches, as the perturbation
``hflip``) the features of every benchmark image mirrored left to right, and fits
the shipped probe (`serving.workflows.fit_heads`, default `HeadOptions`) leave one
family out four ways:

- ``cls``: the shipped probe;
- ``tta``: the same probe, each image scored as the mean of it and its mirror;
- ``aug``: the probe fitted on train∖F and its mirror (twice the rows);
- ``aug+tta``: both.

Threshold at 10 % FPR on the fold's calibration reals (scored the same way);
columns as `bench.families`.

    python -m bench.flip --home .synthguard                  # split cal
    python -m bench.flip --home .synthguard --split test     # information

Selection reads the calibration split; the test split is for information only.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from bench.families import Scores, VariantRun
from serving.features import FeatureSet, cached_features
from serving.heads.base import Head
from serving.jobs import encoder_for
from serving.settings import ServingSettings
from serving.workflows import HeadOptions, dataset_items, fit_heads


def _hflip(img: Image.Image) -> Image.Image:
    return img.convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT)


def mirrored(home: Path, splits: dict[str, FeatureSet]) -> dict[str, FeatureSet]:
    """Features of each split's images mirrored, in its plain rows' order (cached)."""
    settings = ServingSettings(home=home)
    encoder = encoder_for(settings)  # one encoder for every split
    out = {}
    for split, plain in splits.items():
        root = settings.bench_dir / split
        out[split] = cached_features(
            settings.cache_dir,
            root,
            dataset_items(root),
            encoder,
            settings.policy,
            ("hflip", _hflip),
        )
        if out[split].paths != plain.paths:
            raise SystemExit(f"{split}: mirrored rows out of order")
    return out


def _stack(a: FeatureSet, b: FeatureSet) -> FeatureSet:
    return replace(
        a,
        x=np.concatenate([a.x, b.x]),
        y=np.concatenate([a.y, b.y]),
        paths=a.paths + b.paths,
        families=a.families + b.families,
    )


def _score(head: Head, x: FeatureSet, flipped: FeatureSet | None) -> Scores:
    s = head.score(x.x).astype(np.float64)
    if flipped is None:
        return s
    return np.asarray((s + head.score(flipped.x)) / 2, dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    """Print, per held-out family, the variants' AUC and accuracy."""
    run = VariantRun.from_argv(argv, __doc__)
    train, cal, scored, home = run.train, run.cal, run.scored, run.home
    flipped = mirrored(home, {"train": train, "cal": cal, run.split: scored})
    ftrain, fcal, fscored = flipped["train"], flipped["cal"], flipped[run.split]
    table = run.table()
    for fam in run.families:
        keep_t, reals = run.fold_masks(fam)
        fold = train.select(keep_t)
        probes = {
            "cls": fold,
            "aug": _stack(fold, ftrain.select(keep_t)),
        }
        variants: dict[str, tuple[Scores, Scores]] = {}
        for name, rows in probes.items():
            head = fit_heads(rows, ["linear_probe"], HeadOptions())["linear_probe"]
            r_cal, f_cal = cal.select(reals), fcal.select(reals)
            variants[name] = (_score(head, r_cal, None), _score(head, scored, None))
            tta = "tta" if name == "cls" else f"{name}+tta"
            variants[tta] = (_score(head, r_cal, f_cal), _score(head, scored, fscored))
        table.add(fam, variants)
    table.print_means()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
