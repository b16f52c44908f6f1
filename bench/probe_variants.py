"""Benchmark: variants of the linear probe that did not beat it, leave-one-family-out.

Each variant is fitted on train∖F for every family F of the benchmark, its threshold
set on the calibration reals of the other families (10 % and 5 % FPR), and scored
on F's calibration split (what model selection may read) and, for information, on
F's test split. Printed per split: mean and worst AUC, accuracy at both thresholds,
mean TPR at 1 % FPR of F's own reals, and with ``-v`` the AUC of every family.

    python -m bench.probe_variants --home .synthguard --variants shipped,nap2,views_avg

Variants (the features are always the CLS tokens of blocks 6-11, each L2-normalised,
unless said otherwise; the recipe is `serving.training.logistic.train_logreg_cv`):

- ``shipped``: the product's probe, for reference; ``cls<lo>-<hi>``: the same
  recipe on the CLS tokens of blocks lo..hi;
- ``perblock``: one probe per block, logits averaged;
- ``nap2`` / ``nap5``: the 2 / 5 directions along which the per-family fake-minus-real
  mean differences vary most are projected out before the probe (nuisance
  attribute projection: keep what all families share);
- ``knn_fusion``: logistic stacking of the probe and the kNN head (k = 9, all
  blocks), fitted on the calibration split of the other families;
- ``ufd``: the probe on ``ufd_eval`` features (centre crop, no resize);
- ``views_avg``: the probe on ``clip_default`` and the probe on ``ufd_eval``
  features, logits averaged; ``views_rows``: one probe fitted on both views' rows,
  scored as the mean over the two views; ``crop_aug``: one probe fitted on both
  views' rows, scored on the ``clip_default`` view alone (the centre crops are
  training-time augmentation: native-resolution pixels, no cost per request);
- ``lda``: linear discriminant analysis with Ledoit-Wolf shrinkage on the
  standardised features instead of the logistic probe;
- ``wide_c``: the shipped recipe with its C grid widened tenfold at both ends;
  ``worst_c``: the shipped folds and grid, C chosen by the worst held-out
  *family's* AUC instead of the mean over folds (aimed at the worst-family bar).

Besides F's own (resolution-matched) reals, each split is also scored in the
acceptance set's shape (``accept``): F's native 224 px PNG fakes against the native
224 px PNG reals of the plain-photo families but F (`bench.families.acceptance_view`);
its accuracy is balanced (the mean of TPR and 1 − FPR at the 10 % threshold). On the
calibration split this view may choose too.

The ``ufd``, ``views`` and ``crop_aug`` variants extract (and cache) ``ufd_eval`` features
on first use (``crop_aug``: the training split only).
"""

from __future__ import annotations

import argparse
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from bench.families import acceptance_view, native_png224
from serving.features import FeatureSet
from serving.jobs import encoder_for, features_for
from serving.scoring.views import FeatureLayout, FeatureView
from serving.settings import ServingSettings
from serving.training.logistic import LogRegConfig, _fit, _folds, train_logreg_cv

F32 = npt.NDArray[np.float32]
Floats = npt.NDArray[np.float64]
Labels = npt.NDArray[np.int64]
Scorer = Callable[[F32], Floats]
SPLITS = ("train", "cal", "test")
BLOCKS = tuple(range(6, 12))


@dataclass(frozen=True)
class Data:
    """One split: clip_default rows, optional ufd_eval rows, labels, families."""

    x: F32
    ufd: F32 | None
    y: npt.NDArray[np.int64]
    fam: npt.NDArray[np.str_]
    png: npt.NDArray[np.bool_]  # written at its native 224 px as PNG

    def rows(self, mask: npt.NDArray[np.bool_]) -> F32:
        """Rows of `mask`, both views side by side when there are two."""
        if self.ufd is None:
            return self.x[mask]
        return np.concatenate([self.x[mask], self.ufd[mask]], axis=1)


Fit = Callable[[F32, Labels, list[str], str], Scorer]


class Variants:
    """The variants' fit functions over one layout (rows may hold two views)."""

    def __init__(self, layout: FeatureLayout, data: dict[str, Data]) -> None:
        self.layout, self.data, self.width = layout, data, layout.width
        self.view = FeatureView(layout, "blocks", blocks=BLOCKS, norm="l2")

    def table(self) -> dict[str, Fit]:
        """Variant name -> fit function."""
        return {
            "shipped": self.probe(),
            "perblock": self.perblock,
            "nap2": self.nap(2),
            "nap5": self.nap(5),
            "knn_fusion": self.knn_fusion,
            "ufd": self.probe(which="ufd"),
            "views_avg": self.views_avg,
            "views_rows": self.views_rows,
            "crop_aug": self.crop_aug,
            "lda": self.lda,
            "wide_c": self.wide_c,
            "worst_c": self.worst_c,
        }

    def half(self, x: F32, which: str) -> F32:
        """The ``clip`` (clip_default) or ``ufd`` (ufd_eval) part of the rows."""
        return x[:, : self.width] if which == "clip" else x[:, self.width :]

    def probe(self, ids: tuple[int, ...] = BLOCKS, which: str = "clip") -> Fit:
        """The product's probe recipe on blocks `ids` of one view."""
        v = FeatureView(self.layout, "blocks", blocks=ids, norm="l2")

        def fit(x: F32, y: Labels, g: list[str], held: str) -> Scorer:
            r = train_logreg_cv(v.apply(self.half(x, which)), y, g)
            return lambda q: np.asarray(
                v.apply(self.half(q, which)) @ r.weight + r.bias
            )

        return fit

    def perblock(self, x: F32, y: Labels, g: list[str], held: str) -> Scorer:
        """One probe per block, logits averaged."""
        fits = [self.probe((b,))(x, y, g, held) for b in BLOCKS]
        return lambda q: np.asarray(np.mean([f(q) for f in fits], axis=0))

    def nap(self, k: int) -> Fit:
        """Project out the top-`k` directions of the per-family fake-real gaps."""
        view = self.view

        def fit(x: F32, y: Labels, g: list[str], held: str) -> Scorer:
            z = view.apply(self.half(x, "clip")).astype(np.float64)
            mu, sd = z.mean(0), z.std(0) + 1e-6
            zs, ga = (z - mu) / sd, np.asarray(g)
            gaps = [
                zs[(ga == f) & (y == 1)].mean(0) - zs[(ga == f) & (y == 0)].mean(0)
                for f in sorted(set(g))
            ]
            m = np.stack(gaps)
            p = np.linalg.svd(m - m.mean(0), full_matrices=False)[2][:k]
            r = train_logreg_cv((zs - zs @ p.T @ p).astype(np.float32), y, g)

            def score(q: F32) -> Floats:
                qs = (view.apply(self.half(q, "clip")) - mu) / sd
                return np.asarray((qs - qs @ p.T @ p) @ r.weight + r.bias)

            return score

        return fit

    def knn(self, x: F32, y: Labels, k: int = 9) -> Scorer:
        """The kNN head's margin (all blocks, cosine), as a plain function."""
        v = FeatureView(self.layout, "blocks", norm="l2")

        def unit(q: F32) -> Floats:
            a = v.apply(self.half(q, "clip")).astype(np.float64)
            return np.asarray(a / np.linalg.norm(a, axis=1, keepdims=True))

        banks = {c: unit(x[y == c]) for c in (0, 1)}

        def score(q: F32) -> Floats:
            u = unit(q)
            top = {
                c: -np.sort(-(u @ b.T), axis=1)[:, :k].mean(1) for c, b in banks.items()
            }
            return np.asarray(top[1] - top[0])

        return score

    def knn_fusion(self, x: F32, y: Labels, g: list[str], held: str) -> Scorer:
        """Logistic stacking of the probe and kNN on cal of the other families."""
        members = [self.probe()(x, y, g, held), self.knn(x, y)]
        cal = self.data["cal"]
        keep = cal.fam != held
        z = np.stack([m(cal.rows(keep)) for m in members], axis=1)
        mu, sd = z.mean(0), z.std(0)
        lr = LogisticRegression(class_weight="balanced").fit((z - mu) / sd, cal.y[keep])
        return lambda q: np.asarray(
            lr.decision_function((np.stack([m(q) for m in members], axis=1) - mu) / sd)
        )

    def views_avg(self, x: F32, y: Labels, g: list[str], held: str) -> Scorer:
        """A probe per view, logits averaged."""
        a, b = self.probe()(x, y, g, held), self.probe(which="ufd")(x, y, g, held)
        return lambda q: (a(q) + b(q)) / 2

    def views_rows(self, x: F32, y: Labels, g: list[str], held: str) -> Scorer:
        """One probe on both views' rows, scored as the mean over the views."""
        v, h = self.view, self.half
        z = np.concatenate([v.apply(h(x, "clip")), v.apply(h(x, "ufd"))])
        r = train_logreg_cv(z, np.r_[y, y], g * 2)
        return lambda q: np.asarray(
            (v.apply(h(q, "clip")) + v.apply(h(q, "ufd"))) @ r.weight / 2 + r.bias
        )

    def crop_aug(self, x: F32, y: Labels, g: list[str], held: str) -> Scorer:
        """One probe on both views' rows, scored on the clip_default view alone."""
        v, h = self.view, self.half
        z = np.concatenate([v.apply(h(x, "clip")), v.apply(h(x, "ufd"))])
        r = train_logreg_cv(z, np.r_[y, y], g * 2)
        return lambda q: np.asarray(v.apply(h(q, "clip")) @ r.weight + r.bias)

    def wide_c(self, x: F32, y: Labels, g: list[str], held: str) -> Scorer:
        """The shipped recipe, its C grid 10x wider at both ends."""
        grid = (0.0003, 0.001, *LogRegConfig().c_grid, 3.0, 10.0)
        z = self.view.apply(self.half(x, "clip"))
        r = train_logreg_cv(z, y, g, LogRegConfig(c_grid=grid))
        print(f"    wide_c held {held}: C={r.summary.c:g}", flush=True)
        return lambda q: np.asarray(
            self.view.apply(self.half(q, "clip")) @ r.weight + r.bias
        )

    def worst_c(self, x: F32, y: Labels, g: list[str], held: str) -> Scorer:
        """C by the worst held-out family's AUC over the shipped folds and grid."""
        cfg = LogRegConfig()
        z = self.view.apply(self.half(x, "clip")).astype(np.float64)
        zs = (z - z.mean(0)) / np.maximum(z.std(0), 1e-6)
        fam = np.asarray(g)
        _, masks = _folds(y, g, cfg)  # the shipped round-robin family folds
        worst: list[float] = []
        for c in cfg.c_grid:
            aucs = []
            for out in masks:
                lr = _fit(zs[~out], y[~out], c * 64.0 / z.shape[1], cfg)
                for f in sorted(set(fam[out])):
                    m = fam == f
                    aucs.append(roc_auc_score(y[m], lr.decision_function(zs[m])))
            worst.append(min(aucs))
        best = cfg.c_grid[int(np.argmax(worst))]
        shown = " ".join(f"{w:.3f}" for w in worst)
        print(f"    worst_c held {held}: C={best:g} (worst family per C: {shown})")
        r = train_logreg_cv(z.astype(np.float32), y, g, LogRegConfig(c_grid=(best,)))
        return lambda q: np.asarray(
            self.view.apply(self.half(q, "clip")) @ r.weight + r.bias
        )

    def lda(self, x: F32, y: Labels, g: list[str], held: str) -> Scorer:
        """Shrinkage LDA (Ledoit-Wolf) on the standardised probe features."""
        from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

        v = self.view
        z = v.apply(self.half(x, "clip")).astype(np.float64)
        mu, sd = z.mean(0), z.std(0) + 1e-6
        model = LinearDiscriminantAnalysis(solver="lsqr", shrinkage="auto")
        model.fit((z - mu) / sd, y)
        return lambda q: np.asarray(
            model.decision_function((v.apply(self.half(q, "clip")) - mu) / sd)
        )


def _tpr_at(y: npt.NDArray[np.int64], s: npt.NDArray[np.float64], fpr: float) -> float:
    return float(np.mean(s[y == 1] > np.quantile(s[y == 0], 1 - fpr)))


def _acc(y: Labels, s: Floats, thr: float, split: str) -> float:
    """Accuracy at `thr`, balanced in the acceptance view (it has 6-9 reals per fake)."""
    right = (s > thr) == y
    if split.startswith("accept"):
        return float((right[y == 1].mean() + right[y == 0].mean()) / 2)
    return float(right.mean())


def run(name: str, fit: Fit, data: dict[str, Data], verbose: bool) -> None:
    """Leave each family out in turn and print one row per scored split."""
    t0, train = time.monotonic(), data["train"]
    rows: dict[str, list[tuple[str, float, float, float, float]]] = {
        "cal": [],
        "test": [],
        "accept cal": [],
        "accept test": [],
    }
    for fam in sorted(set(train.fam)):
        keep = train.fam != fam
        score = fit(train.rows(keep), train.y[keep], list(train.fam[keep]), fam)
        cal = data["cal"]
        other = cal.fam != fam
        reals = score(cal.rows(other))[cal.y[other] == 0]
        thr10, thr5 = np.quantile(reals, 0.9), np.quantile(reals, 0.95)
        for split, into in rows.items():
            d = data[split.split()[-1]]
            held = d.fam == fam
            if split.startswith("accept"):
                fake, real = acceptance_view(d.fam, d.y, d.png, fam)
                held = fake | real
            s, y = score(d.rows(held)), d.y[held]
            into.append((
                fam, float(roc_auc_score(y, s)), _acc(y, s, thr10, split),
                _acc(y, s, thr5, split), _tpr_at(y, s, 0.01),
            ))  # fmt: skip
    for split, got in rows.items():
        a = np.array([r[1:] for r in got])
        worst = got[int(np.argmin(a[:, 0]))][0]
        print(
            f"| {name} | {split} | {a[:, 0].mean():.4f} | {a[:, 0].min():.3f} ({worst}) "
            f"| {a[:, 1].mean():.4f} | {a[:, 2].mean():.4f} | {a[:, 3].mean():.3f} "
            f"| {time.monotonic() - t0:.0f} |",
            flush=True,
        )
        if verbose:
            print("    " + " ".join(f"{r[0]}={r[1]:.3f}" for r in got))


def _load(home: Path, policy: str, split: str) -> FeatureSet:
    settings = ServingSettings(home=home, policy=policy)
    return features_for(
        settings, encoder_for(settings), settings.bench_dir / split, progress=False
    )


def main(argv: list[str] | None = None) -> int:
    """Print the leave-one-family-out table of each requested variant."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(".synthguard"))
    p.add_argument("--variants", default="shipped,perblock,nap2,knn_fusion")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    names = args.variants.split(",")
    two_views = any(n.startswith(("ufd", "views")) for n in names)
    crop_aug = "crop_aug" in names  # the centre crops only train
    data: dict[str, Data] = {}
    layout = None
    for split in SPLITS:
        fs = _load(args.home, "clip_default", split)
        crops = two_views or (crop_aug and split == "train")
        ufd = _load(args.home, "ufd_eval", split) if crops else None
        if ufd is not None and list(ufd.paths) != list(fs.paths):
            raise SystemExit("the two views list different images")
        layout = FeatureLayout.from_dict(fs.meta.layout)
        data[split] = Data(
            fs.x, None if ufd is None else ufd.x, fs.y, np.array(fs.families),
            native_png224(ServingSettings(home=args.home).bench_dir, split, fs),
        )  # fmt: skip
    if layout is None:
        raise SystemExit("no splits")
    variants = Variants(layout, data)
    table = variants.table()
    print("| variant | split | mean AUC | worst AUC | acc@10% | acc@5% | TPR@1% | s |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        if m := re.fullmatch(r"cls(\d+)-(\d+)", name):
            table[name] = variants.probe(tuple(range(int(m[1]), int(m[2]) + 1)))
        run(name, table[name], data, args.verbose)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
