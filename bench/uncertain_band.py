"""Benchmark: the width of the "uncertain" band, leave-one-family-out.

The deployed decision answers ``ai_generated`` at or above its threshold (set at a
target FPR on the calibration reals), ``uncertain`` between that and a lower edge
set at a looser FPR, ``real`` below. How wide should the band be? For every family F
the decision's heads are fitted on train∖F (`serving.workflows.fit_heads`, the demo
profile's options), calibrated on cal∖F at the target FPR with each band rule, and
F's calibration split (what selection may read) and test split (for information)
are labelled. Per rule: the share of F's images answered ``uncertain`` and the
accuracy on the decided ones (rule ``closed``: no band, every image decided at the
threshold). The novelty reason (`serving.scoring.novelty`) can turn
more images ``uncertain`` in the product; it is not applied here.

    python -m bench.uncertain_band --home .synthguard      # probe: ~1 min idle
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.families import benchmark_splits
from serving.jobs import demo_options
from serving.scoring.calibration import LABEL_AI, LABEL_UNCERTAIN, calibrate, decide
from serving.scoring.fusion import FUSION
from serving.workflows import DEFAULT_HEADS, at_fpr, decision_on_scores, fit_heads

OPTS = demo_options(False)  # the demo profile: what make demo trains


def rules(fpr: float) -> dict[str, float]:
    """Band rule name -> the uncertain edge's FPR at target `fpr`."""
    return {
        "closed": fpr,
        "+2.5 pts": min(0.5, fpr + 0.025),
        "deployed": at_fpr(OPTS, fpr).uncertain_fpr,  # + UNCERTAIN_BAND (0.05)
        "2x": min(0.5, 2 * fpr),
    }


def main(argv: list[str] | None = None) -> int:
    """Print, per band rule, held-out uncertain share and decided accuracy."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(".synthguard"))
    p.add_argument("--decision", default="linear_probe", help="a head or 'fusion'")
    p.add_argument("--fpr", type=float, default=0.1, help="the threshold's target")
    p.add_argument("-v", action="store_true", help="also print every family's rows")
    args = p.parse_args(argv)
    _, train, cal, test = benchmark_splits(args.home)
    names = list(DEFAULT_HEADS) if args.decision == FUSION else [args.decision]
    band = rules(args.fpr)
    # (rule, split) -> per family: (family, uncertain share, decided accuracy)
    got: dict[tuple[str, str], list[tuple[str, float, float]]] = {}
    t0 = time.monotonic()
    for fam in sorted(set(train.families)):
        heads = fit_heads(train.select(~train.family_mask(fam)), names, OPTS)
        fold_cal = cal.select(~cal.family_mask(fam))
        on_cal = {n: h.score(fold_cal.x) for n, h in heads.items()}
        for rule, edge in band.items():
            opts = replace(OPTS, target_fpr=args.fpr, uncertain_fpr=edge)
            d = decision_on_scores(args.decision, on_cal, fold_cal.y, opts)
            for split, fs in (("cal", cal), ("test", test)):
                held = fs.select(fs.family_mask(fam))
                probs = calibrate(
                    d.calibration,
                    d.score({n: h.score(held.x) for n, h in heads.items()}),
                )
                labels = decide(d.calibration, probs)
                unsure = labels == LABEL_UNCERTAIN
                said_ai = labels == LABEL_AI
                right = said_ai == (held.y == 1)
                got.setdefault((rule, split), []).append((
                    fam, float(unsure.mean()),
                    float(right[~unsure].mean()) if (~unsure).any() else float("nan"),
                ))  # fmt: skip
        print(f"# {fam} done, {time.monotonic() - t0:.0f} s", flush=True)
    print(
        f"\ndecision {args.decision} at {args.fpr:g} FPR; mean over held-out families"
    )
    print(
        "| band edge | split | edge FPR | uncertain | decided acc | worst decided acc |"
    )
    print("|---|---|---|---|---|---|")
    for (rule, split), rows in got.items():
        a = np.array([r[1:] for r in rows])
        worst = rows[int(np.nanargmin(a[:, 1]))]
        print(
            f"| {rule} | {split} | {band[rule]:g} | {a[:, 0].mean():.3f} "
            f"| {np.nanmean(a[:, 1]):.4f} | {worst[2]:.3f} ({worst[0]}) |"
        )
        if args.v:
            print("    " + " ".join(f"{r[0]}={r[1]:.2f}/{r[2]:.3f}" for r in rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
