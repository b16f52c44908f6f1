"""Benchmark: which features the linear probe reads, chosen by leave-one-family-out.

For each candidate block set, the product's own `leave_one_family_out` fits the
probe on train∖F and scores the *calibration* split of F (what model selection may
read) and, for information only, the test split of F. The default in
`serving.workflows.HeadOptions.probe_blocks` is the set with the best mean
calibration-split AUC; the test columns are never used to choose.

    python -m bench.selection --home .synthguard              # full benchmark
    python -m bench.selection --home .synthguard --sets embeds:univfd,embeds,0-11

A set is ``embeds`` (the projected embedding, L2-normalised) or ``<lo>-<hi>`` (the CLS
tokens of blocks lo..hi, each L2-normalised), optionally ``:univfd`` for UnivFD's own
trainer instead of the default grouped-CV logistic recipe.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from bench.families import benchmark_splits
from serving.workflows import HeadOptions, leave_one_family_out


def _options(spec: str) -> HeadOptions:
    view, _, recipe = spec.partition(":")
    opts = replace(
        HeadOptions(), fpr_candidates=(0.01,), probe_recipe=recipe or "logreg_cv"
    )
    if view == "embeds":
        return replace(opts, probe_source="embeds")
    lo, hi = (int(v) for v in view.split("-"))
    return replace(opts, probe_blocks=tuple(range(lo, hi + 1)))


def main(argv: list[str] | None = None) -> int:
    """Print mean / worst held-out-family AUC per block set, calibration and test."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(".synthguard"))
    p.add_argument("--sets", default="embeds:univfd,embeds,0-11,2-9,4-11,6-11")
    args = p.parse_args(argv)
    _, train, cal, test = benchmark_splits(args.home)
    print("| features | cal mean AUC | cal worst | test mean AUC | test worst | s |")
    print("|---|---|---|---|---|---|")
    for spec in args.sets.split(","):
        t = time.perf_counter()
        run = leave_one_family_out(train, cal, test, ["linear_probe"], _options(spec))
        cells = []
        for ev in (run.selection, run.test):
            aucs = [r.auc for r in ev.results if r.head == "linear_probe"]
            cells += [f"{np.mean(aucs):.4f}", f"{np.min(aucs):.4f}"]
        print(f"| {spec} | {' | '.join(cells)} | {time.perf_counter() - t:.0f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
