"""Benchmark: would more training pairs per family help on unseen families?

Leave one family out with the product's probe (`serving.workflows.fit_heads`, default
`HeadOptions`), fitted on a seeded, class- and family-stratified fraction of
train[∖F]; scored on F's images of ``--split`` against F's own reals, and in the
acceptance-shaped view (F's native 224 px PNG fakes against the native 224 px PNG
reals of the plain-photo families; see `bench.families`). The threshold is the 10 %
FPR quantile of the fold's calibration reals (the deployed target).

    python -m bench.learning_curve --home .synthguard                 # split cal
    python -m bench.learning_curve --home .synthguard --split test    # information

If the mean AUC still climbs between the last two fractions, a larger default
benchmark (``BenchConfig.n_train``) would likely pay; if it is flat, it would not.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.families import benchmark_splits, held_out_cells, native_png224
from serving.features import FeatureSet
from serving.workflows import HeadOptions, fit_heads

Mask = npt.NDArray[np.bool_]


def stratified_fraction(fs: FeatureSet, fraction: float, seed: int) -> Mask:
    """A seeded mask keeping ``fraction`` of each (family, label) group of `fs`."""
    rng = np.random.default_rng(seed)
    fams, keep = np.array(fs.families), np.zeros(len(fs.y), dtype=bool)
    for fam in sorted(set(fs.families)):
        for label in (0, 1):
            idx = np.flatnonzero((fams == fam) & (fs.y == label))
            n = max(1, round(fraction * len(idx)))
            keep[rng.choice(idx, size=n, replace=False)] = True
    return keep


def main(argv: list[str] | None = None) -> int:
    """Print the LOFO probe's mean and worst AUC per training fraction."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(".synthguard"))
    p.add_argument("--split", default="cal", choices=("cal", "test"))
    p.add_argument("--fractions", default="0.25,0.5,0.75,1.0")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    bench, train, cal, test = benchmark_splits(args.home)
    scored = cal if args.split == "cal" else test
    png = native_png224(bench, args.split, scored)
    fams, y = np.array(scored.families), scored.y
    tr_fams, cal_fams = np.array(train.families), np.array(cal.families)
    families = sorted(set(train.families))
    print(f"split {args.split}; probe threshold at 10 % FPR on the fold's cal reals")
    print("| train fraction | pairs/family | mean AUC | worst AUC (family) "
          "| acc@thr | accept AUC | accept worst | accept bal. acc |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for fraction in (float(f) for f in args.fractions.split(",")):
        keep = stratified_fraction(train, fraction, args.seed)
        rows: list[tuple[float, float, float, float]] = []
        for fam in families:
            fold = train.select(keep & (tr_fams != fam))
            head = fit_heads(fold, ["linear_probe"], HeadOptions())["linear_probe"]
            fold_cal = cal.select(cal_fams != fam)
            thr = float(np.quantile(head.score(fold_cal.x)[fold_cal.y == 0], 0.9))
            s = head.score(scored.x).astype(np.float64)
            rows.append(held_out_cells(s, fams, y, png, fam, thr))
        a = np.array(rows)
        w, wa = int(a[:, 0].argmin()), int(a[:, 2].argmin())
        pairs = int(keep[(tr_fams == families[0]) & (train.y == 1)].sum())
        print(
            f"| {fraction:.2f} | {pairs} | {a[:, 0].mean():.4f} | {a[w, 0]:.3f} "
            f"({families[w]}) | {a[:, 1].mean():.3f} | {a[:, 2].mean():.4f} | "
            f"{a[wa, 2]:.3f} ({families[wa]}) | {a[:, 3].mean():.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
