"""Benchmark: decision candidates leave-one-family-out, with an acceptance-shaped view.

For every family F of the benchmark the product's heads (`serving.workflows.fit_heads`,
the demo profile's options) are fitted once on train∖F. Each candidate decision (one
head alone, the fusion of all four, and every fusion of two or three heads) is then
fitted and calibrated on cal∖F as `serving.workflows.leave_one_family_out` does for
the deployed decision, at one target FPR (``--fpr``, the deployed 10 % by default),
and scored three ways:

- ``cal``: F's calibration split against F's own (resolution-matched) reals, which
  is what model selection may read;
- ``test``: the same on F's test split, for information;
- ``accept``: F's native 224 px PNG test fakes against the native 224 px PNG test
  reals of the plain-photo families (`bench.families.PLAIN_REALS`): the shape of the
  acceptance set (PNG 224², plain Debian photos). Reported: AUC, the share of fakes
  and of reals above the deployed threshold, and the balanced accuracy there (the
  acceptance set has as many fakes as reals; this view has 6-9 reals per fake:
  141 plain reals, 16-27 fakes per family).

    python -m bench.decisions --home .synthguard            # 11 folds, ~6 min idle

Only the ``cal`` columns may choose anything; the others are for information. A
last table gives each candidate's calibration-split AUC gap to the best candidate,
paired by fold, with its standard error.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from bench.families import PLAIN_REALS, benchmark_splits, native_png224
from serving.evaluation.results import DomainResult, evaluate_domain
from serving.features import FeatureSet
from serving.heads.base import Head
from serving.jobs import demo_options
from serving.scoring.calibration import calibrate
from serving.scoring.fusion import FUSION
from serving.workflows import DEFAULT_HEADS, at_fpr, decision_on_scores, fit_heads

Mask = npt.NDArray[np.bool_]
OPTS = demo_options(False)  # the demo profile: what make demo trains
SHORT = {"knn_k9": "knn", "linear_probe": "probe", "mlp": "mlp", "rine": "rine"}


def candidates(heads: Sequence[str]) -> list[tuple[str, ...]]:
    """Every head alone, then every fusion of two or more heads (all of them last)."""
    return [
        c for k in range(1, len(heads) + 1) for c in itertools.combinations(heads, k)
    ]


def fold_rows(
    fam: str, heads: dict[str, Head], cal: FeatureSet, test: FeatureSet,
    accept: tuple[Mask, Mask], jobs: Sequence[tuple[tuple[str, ...], float]],
) -> dict[tuple[tuple[str, ...], float], list[DomainResult]]:  # fmt: skip
    """Per (candidate, target FPR): family `fam`'s cal, test and acceptance results."""
    fold_cal = cal.select(~cal.family_mask(fam))
    held = {"cal": cal.select(cal.family_mask(fam)), "test": test}
    on_cal = {n: h.score(fold_cal.x) for n, h in heads.items()}
    scored = {(n, k): h.score(fs.x) for n, h in heads.items() for k, fs in held.items()}
    own = test.family_mask(fam)
    fake = accept[0] & own & (test.y == 1)
    masks = {
        "cal": np.ones(len(held["cal"].y), bool),
        "test": own,
        "accept": fake | accept[1],
    }
    out: dict[tuple[tuple[str, ...], float], list[DomainResult]] = {}
    for members, fpr in jobs:
        name = FUSION if len(members) > 1 else members[0]
        rule = decision_on_scores(
            name, {m: on_cal[m] for m in members}, fold_cal.y, at_fpr(OPTS, fpr)
        )
        rows = []
        for view, mask in masks.items():
            split = "cal" if view == "cal" else "test"
            fs = held[split]
            s = rule.score({m: scored[(m, split)] for m in members})
            p = calibrate(rule.calibration, s)
            thr = rule.calibration.threshold
            rows.append(
                evaluate_domain(
                    fam, "+".join(members), fs.y[mask], s[mask], p[mask], thr
                )
            )
        out[(members, fpr)] = rows
    return out


def _mean_f(rows: Sequence[DomainResult], key: str) -> float:
    return float(np.mean([getattr(r, key) for r in rows]))


def _mean(rows: Sequence[DomainResult], key: str) -> str:
    return f"{_mean_f(rows, key):.3f}"


def _balanced(r: DomainResult) -> float:
    # the acceptance view has far more reals than fakes; its set is balanced
    return (r.fake_acc + r.real_acc) / 2


def _auc(rows: Sequence[DomainResult]) -> str:
    return f"{_mean_f(rows, 'auc'):.4f} ({min(r.auc for r in rows):.3f})"


def main(argv: list[str] | None = None) -> int:
    """Print the candidates' leave-one-family-out table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(".synthguard"))
    p.add_argument("--fpr", type=float, default=0.1, help="for the candidates")
    p.add_argument(
        "--fprs", default="0.05,0.08,0.1,0.12,0.15,0.2", help="for the 4-head fusion"
    )
    p.add_argument("-v", action="store_true", help="also print every family's rows")
    args = p.parse_args(argv)
    bench, train, cal, test = benchmark_splits(args.home)
    png = native_png224(bench, "test", test)
    plain = np.isin(np.array(test.families), sorted(PLAIN_REALS)) & (test.y == 0) & png
    everything = tuple(DEFAULT_HEADS)
    jobs = [(c, args.fpr) for c in candidates(everything)]
    jobs += [(everything, float(f)) for f in args.fprs.split(",")]
    jobs = list(dict.fromkeys(jobs))  # the deployed point is in both lists
    results: dict[tuple[tuple[str, ...], float], list[list[DomainResult]]] = {}
    for fam in sorted(set(train.families)):
        t0 = time.perf_counter()
        heads = fit_heads(train.select(~train.family_mask(fam)), DEFAULT_HEADS, OPTS)
        for job, rows in fold_rows(fam, heads, cal, test, (png, plain), jobs).items():
            results.setdefault(job, []).append(rows)
        print(f"# fold {fam}: {time.perf_counter() - t0:.0f} s", flush=True)
    print("\nthreshold at the target FPR on cal∖F reals; AUC: mean (worst family)")
    print("| candidate | FPR | cal AUC | cal acc | test AUC | test acc | test TPR@1% "
          "| accept AUC | accept TPR | accept FPR | accept bal. acc |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for (members, fpr), per_fold in results.items():
        c, t, a = (list(col) for col in zip(*per_fold, strict=True))
        name = "+".join(SHORT.get(m, m) for m in members)
        print(f"| {name} | {fpr:g} | {_auc(c)} | {_mean(c, 'acc')} | {_auc(t)} "
              f"| {_mean(t, 'acc')} | {_mean(t, 'tpr_at_fpr1')} | {_auc(a)} "
              f"| {_mean(a, 'fake_acc')} | {1 - _mean_f(a, 'real_acc'):.3f} "
              f"| {np.mean([_balanced(r) for r in a]):.3f} |")  # fmt: skip
        if args.v and (members, fpr) == (everything, args.fpr):
            for r, q in zip(t, a, strict=True):
                print(f"|   {r.domain} | | | | {r.auc:.3f} | {r.acc:.3f} "
                      f"| {r.tpr_at_fpr1:.3f} | {q.auc:.3f} | {q.fake_acc:.3f} "
                      f"| {1 - q.real_acc:.3f} | {_balanced(q):.3f} |")  # fmt: skip
    print_gaps(results)
    return 0


def print_gaps(
    results: dict[tuple[tuple[str, ...], float], list[list[DomainResult]]],
) -> None:
    """Each candidate's cal AUC gap to the best one: mean and standard error over folds.

    The folds are paired (the same held-out family), so the spread of the per-fold
    differences says whether a gap is larger than the folds' noise.
    """
    # the AUC does not depend on the operating point: one row per candidate
    cal: dict[tuple[str, ...], npt.NDArray[np.float64]] = {}
    for (members, _fpr), per_fold in results.items():
        cal.setdefault(members, np.array([rows[0].auc for rows in per_fold]))
    best = max(cal, key=lambda members: float(cal[members].mean()))
    print(f"\npaired cal AUC gap to the best ({'+'.join(best)})")
    print("| candidate | gap (mean) | standard error | folds better |")
    print("|---|---|---|---|")
    for members, aucs in cal.items():
        d = cal[best] - aucs
        se = float(d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
        name = "+".join(SHORT.get(m, m) for m in members)
        print(f"| {name} | {d.mean():+.4f} | {se:.4f} | {(d < 0).sum()} |")


if __name__ == "__main__":
    raise SystemExit(main())
