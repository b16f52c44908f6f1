"""Benchmark: which blocks the linear probe reads, chosen by leave-one-family-out.

For each candidate block set, the product's own `leave_one_family_out` fits the
probe on train∖F and scores the *calibration* split of F (what model selection may
read) and, for information only, the test split of F. The default in
`serving.workflows.HeadOptions.probe_blocks` is the set with the best mean
calibration-split AUC; the test columns are never used to choose.

    python -m bench.selection --home .synthguard              # full benchmark
    python -m bench.selection --home .synthguard --sets 0-11,4-11,6-11
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from serving.commands import encoder_for, features_for
from serving.settings import ServingSettings
from serving.workflows import HeadOptions, leave_one_family_out


def _blocks(spec: str) -> tuple[int, ...]:
    lo, hi = (int(v) for v in spec.split("-"))
    return tuple(range(lo, hi + 1))


def main(argv: list[str] | None = None) -> int:
    """Print mean / worst held-out-family AUC per block set, calibration and test."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(".synthguard"))
    p.add_argument("--sets", default="0-11,2-9,4-11,6-11")
    args = p.parse_args(argv)
    settings = ServingSettings(home=args.home)
    encoder = encoder_for(settings)
    bench = settings.bench_dir
    train, cal, test = (
        features_for(settings, encoder, bench / s, progress=False)
        for s in ("train", "cal", "test")
    )
    print("| blocks | cal mean AUC | cal worst | test mean AUC | test worst | s |")
    print("|---|---|---|---|---|---|")
    for spec in args.sets.split(","):
        t = time.perf_counter()
        opts = replace(
            HeadOptions(), probe_blocks=_blocks(spec), fpr_candidates=(0.01,)
        )
        run = leave_one_family_out(train, cal, test, ["linear_probe"], opts)
        cells = []
        for ev in (run.selection, run.test):
            aucs = [r.auc for r in ev.results if r.head == "linear_probe"]
            cells += [f"{np.mean(aucs):.4f}", f"{np.min(aucs):.4f}"]
        print(f"| {spec} | {' | '.join(cells)} | {time.perf_counter() - t:.0f} |")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
