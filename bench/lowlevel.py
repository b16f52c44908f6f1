"""Benchmark: do pixel-level up-sampling statistics add to the CLIP probe on unseen families?

Generators up-sample (transposed convolutions, pixel shuffle, nearest/bilinear
resizes, SR networks), which leaves periodic traces between neighbouring pixels
(NPR, Tan et al., CVPR 2024) and peaks in the spectrum of the high-pass residual
(Durall et al., CVPR 2020). CLIP sees the image resized to 224 px, where these traces
are partly gone. This computes, on the centre 224 px crop of each benchmark image at
its native resolution (no resize), a small vector of such statistics:

- neighbour differences by phase, periods 2 and 4, both axes (sorted, because the
  crop's phase is arbitrary), relative to their mean;
- the radially averaged log power spectrum of the Laplacian residual (Hann window);
- the log power at the 1/2 and 1/4 frequencies against its neighbourhood's median;
- the chroma residuals' energy relative to the luma's.

It fits a standardised logistic regression on them (C by cross-validation grouped by
family, on train∖F) leave one family out and compares, with the shipped probe's CLS
features (`serving.workflows.fit_heads`, default `HeadOptions`):

- ``cls``: the shipped probe;
- ``low``: the pixel statistics alone;
- ``cls+low w``: the two standardised logits (scaled on the fold's calibration reals),
  ``(1 - w) * cls + w * low``.

Threshold at 10 % FPR on the fold's calibration reals; columns as `bench.families`.

    python -m bench.lowlevel --home .synthguard                  # split cal
    python -m bench.lowlevel --home .synthguard --split test     # information

Selection reads the calibration split; the test split is for information only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GroupKFold
from sklearn.preprocessing import StandardScaler

from bench.families import Scores, VariantRun, probe_fold, standardised
from serving.features import FeatureSet

Floats = npt.NDArray[np.float64]
CROP = 224
RADIAL_BINS = 24
C_GRID = (0.01, 0.1, 1.0, 10.0)
WEIGHTS = (0.25, 0.5)


def _phase_diffs(y: Floats, period: int, axis: int) -> Floats:
    d = np.abs(np.diff(y, axis=axis))
    d = np.moveaxis(d, axis, 0)
    n = (d.shape[0] // period) * period
    by_phase = d[:n].reshape(n // period, period, -1).mean(axis=(0, 2))
    return np.sort(by_phase / by_phase.mean())


def _radial(power: Floats) -> Floats:
    n = power.shape[0]
    f = np.fft.fftshift(np.fft.fftfreq(n))
    r = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    bins = np.minimum((r / 0.5 * RADIAL_BINS).astype(int), RADIAL_BINS - 1)
    sums = np.bincount(bins.ravel(), weights=power.ravel(), minlength=RADIAL_BINS)
    counts = np.bincount(bins.ravel(), minlength=RADIAL_BINS)
    logp = np.log(sums / np.maximum(counts, 1) + 1e-12)
    return np.asarray(logp - logp.mean(), dtype=np.float64)


def _peaks(power: Floats) -> Floats:
    n, c = power.shape[0], power.shape[0] // 2
    logp = np.log(power + 1e-12)
    out = []
    for dy, dx in ((n // 2, 0), (0, n // 2), (n // 2, n // 2), (n // 4, 0),
                   (0, n // 4), (n // 4, n // 4)):  # fmt: skip
        yy, xx = (c + dy) % n, (c + dx) % n
        patch = logp[np.ix_([(yy + k) % n for k in range(-3, 4)],
                            [(xx + k) % n for k in range(-3, 4)])]  # fmt: skip
        out.append(logp[yy, xx] - np.median(patch))
    return np.array(out)


def pixel_stats(path: Path) -> Floats:
    """The statistics above for the centre 224 px crop of the image at `path`."""
    with Image.open(path) as im:
        ycc = np.asarray(im.convert("YCbCr"), dtype=np.float64)
    h, w = ycc.shape[:2]
    top, left = (h - CROP) // 2, (w - CROP) // 2
    ycc = ycc[top : top + CROP, left : left + CROP]
    lap = 4 * ycc[1:-1, 1:-1] - ycc[:-2, 1:-1] - ycc[2:, 1:-1] - ycc[1:-1, :-2]
    lap = lap - ycc[1:-1, 2:]
    luma = ycc[..., 0]
    win = np.outer(np.hanning(CROP - 2), np.hanning(CROP - 2))
    spec = np.asarray(
        np.abs(np.fft.fftshift(np.fft.fft2(lap[..., 0] * win))) ** 2, dtype=np.float64
    )
    energy = (lap**2).mean(axis=(0, 1)) + 1e-9
    parts = [
        *(_phase_diffs(luma, p, a) for p in (2, 4) for a in (0, 1)),
        _radial(spec),
        _peaks(spec),
        np.log(energy[1:] / energy[0]),
    ]
    return np.concatenate(parts)


def pixel_features(split_dir: Path, fs: FeatureSet) -> Floats:
    """`pixel_stats` of every row of `fs`, in its order."""
    return np.stack([pixel_stats(split_dir / p) for p in fs.paths])


def _fit_low(
    x: Floats, y: npt.NDArray[np.int64], groups: list[str]
) -> tuple[StandardScaler, LogisticRegression]:
    scaler = StandardScaler().fit(x)
    xs = scaler.transform(x)
    folds = list(GroupKFold(n_splits=5).split(xs, y, groups))
    best, best_c = -np.inf, C_GRID[0]
    for c in C_GRID:
        ll = 0.0
        for tr, va in folds:
            m = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
            p = m.fit(xs[tr], y[tr]).predict_proba(xs[va])[:, 1]
            ll += float(np.mean(np.log(np.where(y[va] == 1, p, 1 - p) + 1e-12)))
        if ll > best:
            best, best_c = ll, c
    model = LogisticRegression(C=best_c, class_weight="balanced", max_iter=2000)
    model.fit(xs, y)
    return scaler, model


def _score_low(fitted: tuple[StandardScaler, LogisticRegression], x: Floats) -> Scores:
    scaler, model = fitted
    return np.asarray(model.decision_function(scaler.transform(x)), dtype=np.float64)


def main(argv: list[str] | None = None) -> int:
    """Print, per held-out family, the variants' AUC and accuracy."""
    run = VariantRun.from_argv(argv, __doc__)
    train, cal, scored, bench = run.train, run.cal, run.scored, run.bench
    ltrain, lcal = (
        pixel_features(bench / s, f) for s, f in (("train", train), ("cal", cal))
    )
    lscored = lcal if run.split == "cal" else pixel_features(bench / "test", scored)
    table = run.table()
    for fam in run.families:
        keep_t, keep_c = run.fold_masks(fam)
        c_cal, c_s = probe_fold(train, cal, scored, fam)
        fams = list(np.array(train.families)[keep_t])
        low = _fit_low(ltrain[keep_t], train.y[keep_t], fams)
        l_cal, l_s = _score_low(low, lcal[keep_c]), _score_low(low, lscored)
        zc = [standardised(r, r) for r in (c_cal, l_cal)]
        zs = [standardised(r, s) for r, s in ((c_cal, c_s), (l_cal, l_s))]
        variants = {"cls": (c_cal, c_s), "low": (l_cal, l_s)}
        for w in WEIGHTS:
            variants[f"cls+low {w}"] = (
                (1 - w) * zc[0] + w * zc[1],
                (1 - w) * zs[0] + w * zs[1],
            )
        table.add(fam, variants)
    table.print_means()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
