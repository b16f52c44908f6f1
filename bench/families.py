"""Benchmark: does training on more generator families help on unseen ones?

For every family F of ``--base``, the product's probe (`serving.workflows.fit_heads`,
default `HeadOptions`) is fitted twice: on train[base∖F] and on train[base∖F + extra];
its threshold is set at 5 % FPR on the calibration reals of the same families; then
F's images of ``--split`` are scored, against F's own (resolution-matched) reals and,
for the acceptance-shaped column, F's native 224 px PNG fakes against the native
224 px PNG reals of the plain-photo families (reals cut straight from photos).

    python -m bench.families --home .synthguard                      # split cal
    python -m bench.families --home .synthguard --split test         # for information

Model choices read the calibration split; the test split is for information only.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from serving.benchdata.builder import MANIFEST_NAME
from serving.features import FeatureSet
from serving.jobs import encoder_for, features_for
from serving.settings import ServingSettings
from serving.workflows import HeadOptions, fit_heads

BASE = (
    "dcgan_faces,esrgan_x2,ae_tconv,ae_nnconv,ae_pixelshuffle,diffusion_sdedit,"
    "vae_latent,espcn_x4"
)
EXTRA = "ae_bilinear,ae_adversarial,srgan_x2"
PLAIN_REALS = {"ae_tconv", "ae_nnconv", "ae_pixelshuffle", "diffusion_sdedit",
               "vae_latent", "ae_bilinear", "ae_adversarial"}  # fmt: skip
Mask = npt.NDArray[np.bool_]


def _in(fs: FeatureSet, families: set[str]) -> Mask:
    return np.isin(np.array(fs.families), sorted(families))


def benchmark_splits(home: Path) -> tuple[Path, FeatureSet, FeatureSet, FeatureSet]:
    """The benchmark directory under `home` and its train, cal and test features.

    Features come from the cache (extracted on first use), as the product reads them.
    """
    settings = ServingSettings(home=home)
    encoder, bench = encoder_for(settings), settings.bench_dir
    train, cal, test = (
        features_for(settings, encoder, bench / s, progress=False)
        for s in ("train", "cal", "test")
    )
    return bench, train, cal, test


def native_png224(bench: Path, split: str, fs: FeatureSet) -> Mask:
    """Rows of `fs` (split `split` of `bench`) written at their native 224 px as PNG."""
    images = json.loads((bench / MANIFEST_NAME).read_text())["images"]
    native = {
        i["path"].split("/", 1)[1]
        for i in images
        if i["split"] == split and i["side"] == 224
        and i["format"]["container"] == "png"
    }  # fmt: skip
    return np.array([path in native for path in fs.paths])


def auc_acc(
    scores: npt.NDArray[np.float64],
    fake: Mask,
    real: Mask,
    thr: float,
    *,
    balanced: bool = False,
) -> tuple[float, float]:
    """AUC of `fake` against `real` rows, and their accuracy at ``score >= thr``.

    With `balanced`, the accuracy is the mean of TPR and 1 - FPR (for a view whose
    classes differ in size, scored as a balanced set would be).
    """
    y = np.r_[np.ones(fake.sum()), np.zeros(real.sum())]
    s = np.r_[scores[fake], scores[real]]
    right = (s >= thr) == y
    acc = (
        (right[y == 1].mean() + right[y == 0].mean()) / 2 if balanced else right.mean()
    )
    return float(roc_auc_score(y, s)), float(acc)


def acceptance_view(
    fams: npt.NDArray[np.str_], y: npt.NDArray[np.int64], png: Mask, fam: str
) -> tuple[Mask, Mask]:
    """The acceptance set's shape with `fam` held out: (fakes, reals).

    `fam`'s native 224 px PNG fakes, and the native 224 px PNG reals of the
    plain-photo families but `fam` (6-9 reals per fake; the acceptance set itself
    is balanced, so accuracies in this view are balanced ones).
    """
    fake = (fams == fam) & (y == 1) & png
    real = np.isin(fams, sorted(PLAIN_REALS - {fam})) & (y == 0) & png
    return fake, real


def held_out_cells(
    scores: npt.NDArray[np.float64],
    fams: npt.NDArray[np.str_],
    y: npt.NDArray[np.int64],
    png: Mask,
    fam: str,
    thr: float,
) -> tuple[float, float, float, float]:
    """Held-out `fam`'s AUC and accuracy at `thr`: against its own reals, then in the
    acceptance set's shape (`acceptance_view`, balanced accuracy)."""
    own = auc_acc(scores, (fams == fam) & (y == 1), (fams == fam) & (y == 0), thr)
    fake, real = acceptance_view(fams, y, png, fam)
    return (*own, *auc_acc(scores, fake, real, thr, balanced=True))


Scores = npt.NDArray[np.float64]


def standardised(ref: Scores, s: Scores) -> Scores:
    """`s` standardised by the mean and spread of `ref` (a fold's cal reals)."""
    return np.asarray((s - ref.mean()) / ref.std(), dtype=np.float64)


class HeldOutTable:
    """The variant benchmarks' table: one row per held-out family and variant.

    Each variant's threshold sits at 10 % FPR of its own scores on the fold's
    calibration reals; the cells are `held_out_cells`. Prints as it goes.

    Args:
        scored: Name of the scored split, for the title line.
        fams: Family of each scored row.
        y: Label of each scored row.
        png: Scored rows written at their native 224 px as PNG.
    """

    def __init__(
        self,
        scored: str,
        fams: npt.NDArray[np.str_],
        y: npt.NDArray[np.int64],
        png: Mask,
    ) -> None:
        self.fams, self.y, self.png = fams, y, png
        self.rows: dict[str, list[tuple[float, ...]]] = {}
        print(f"split {scored}; threshold at 10 % FPR on the fold's cal reals")
        print(
            "| held out | variant | AUC own reals | acc | accept AUC | accept bal. acc |"
        )
        print("|---|---|---|---|---|---|")

    def add(self, fam: str, variants: dict[str, tuple[Scores, Scores]]) -> None:
        """Score held-out `fam` for each variant: name -> (cal reals, scored rows)."""
        for name, (reals, s) in variants.items():
            thr = float(np.quantile(reals, 0.9))
            cells = held_out_cells(s, self.fams, self.y, self.png, fam, thr)
            self.rows.setdefault(name, []).append(cells)
            shown = " | ".join(f"{v:.3f}" for v in cells)
            print(f"| {fam} | {name} | {shown} |", flush=True)

    def print_means(self) -> None:
        """One mean row per variant, with the worst family's AUC in both views."""
        for name, vals in self.rows.items():
            a = np.array(vals)
            print(
                f"| **mean** | {name} | {a[:, 0].mean():.4f} (worst {a[:, 0].min():.3f})"
                f" | {a[:, 1].mean():.3f} | {a[:, 2].mean():.4f} (worst "
                f"{a[:, 2].min():.3f}) | {a[:, 3].mean():.3f} |"
            )


def probe_fold(
    train: FeatureSet, cal: FeatureSet, scored: FeatureSet, fam: str
) -> tuple[Scores, Scores]:
    """The shipped probe fitted on train∖F: (cal∖F reals' scores, `scored`'s scores)."""
    fold = train.select(np.array(train.families) != fam)
    head = fit_heads(fold, ["linear_probe"], HeadOptions())["linear_probe"]
    keep = (np.array(cal.families) != fam) & (cal.y == 0)
    cal_reals = head.score(cal.x[keep]).astype(np.float64)
    return cal_reals, head.score(scored.x).astype(np.float64)


@dataclass(frozen=True)
class VariantRun:
    """What a variant benchmark reads: its ``--home`` / ``--split`` and the features.

    Attributes:
        home: The product's home (benchmark and feature cache).
        split: The scored split, ``cal`` (selection) or ``test`` (information).
        bench: The benchmark directory.
        train: Training split features.
        cal: Calibration split features.
        test: Test split features.
    """

    home: Path
    split: str
    bench: Path
    train: FeatureSet
    cal: FeatureSet
    test: FeatureSet

    @classmethod
    def from_argv(cls, argv: list[str] | None, doc: str) -> VariantRun:
        """Parse ``--home`` and ``--split`` (help from `doc`'s first line), load features."""
        p = argparse.ArgumentParser(description=doc.splitlines()[0])
        p.add_argument("--home", type=Path, default=Path(".synthguard"))
        p.add_argument("--split", default="cal", choices=("cal", "test"))
        args = p.parse_args(argv)
        bench, train, cal, test = benchmark_splits(args.home)
        return cls(args.home, args.split, bench, train, cal, test)

    @property
    def scored(self) -> FeatureSet:
        """The scored split's features."""
        return self.cal if self.split == "cal" else self.test

    @property
    def families(self) -> list[str]:
        """The held-out families, in order."""
        return sorted(set(self.train.families))

    def fold_masks(self, fam: str) -> tuple[Mask, Mask]:
        """Held-out `fam`'s fold: the rows of train∖F, and the reals of cal∖F."""
        keep_train = np.array(self.train.families) != fam
        cal_reals = (np.array(self.cal.families) != fam) & (self.cal.y == 0)
        return keep_train, cal_reals

    def table(self) -> HeldOutTable:
        """The printed table for the scored split."""
        scored = self.scored
        png = native_png224(self.bench, self.split, scored)
        return HeldOutTable(self.split, np.array(scored.families), scored.y, png)


def main(argv: list[str] | None = None) -> int:
    """Print, per held-out family, the probe without and with the extra families."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(".synthguard"))
    p.add_argument("--base", default=BASE)
    p.add_argument("--extra", default=EXTRA)
    p.add_argument("--split", default="cal", choices=("cal", "test"))
    args = p.parse_args(argv)
    base, extra = set(args.base.split(",")), set(args.extra.split(","))
    bench, train, cal, test = benchmark_splits(args.home)
    scored = cal if args.split == "cal" else test
    png = native_png224(bench, args.split, scored)
    fams, y = np.array(scored.families), scored.y
    print(f"split {args.split}; probe threshold at 5 % FPR on cal reals of the fit")
    print("| held out | training | AUC own reals | acc | AUC png224 vs plain | acc |")
    print("|---|---|---|---|---|---|")
    sums: dict[str, list[list[float]]] = {}
    for fam in sorted(base):
        for name, families in (
            ("base", base - {fam}),
            ("+extra", base - {fam} | extra),
        ):
            head = fit_heads(train.select(_in(train, families)), ["linear_probe"],
                             HeadOptions())["linear_probe"]  # fmt: skip
            fold_cal = cal.select(_in(cal, families))
            cal_scores = head.score(fold_cal.x)
            thr = float(np.quantile(cal_scores[fold_cal.y == 0], 0.95))
            s = head.score(scored.x).astype(np.float64)
            cells = list(held_out_cells(s, fams, y, png, fam, thr))
            shown = " | ".join(f"{v:.3f}" for v in cells)
            print(f"| {fam} | {name} | {shown} |", flush=True)
            sums.setdefault(name, []).append(cells)
    for name, rows in sums.items():
        a = np.array(rows)
        mean, worst = " | ".join(f"{v:.3f}" for v in a.mean(0)), a.min(0)
        print(
            f"| **mean** | {name} | {mean} |  (worst AUC {worst[0]:.3f} / {worst[2]:.3f})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
