"""Application: the jobs under both CLIs (``synthguard`` and ``stream``).

Everything a command does beyond parsing its arguments: the configured encoder,
cached features, training with the decision chosen by leave-one-family-out,
robustness evaluation, the offline benchmark, and the demo profile (head options,
paths, artifacts) that ``synthguard eval-demo`` and the stream demo share.
`serving.commands` (argument handling) and `serving.demo` (the evaluation report)
call these; so does `stream.dev.assets`.
"""

from __future__ import annotations

import logging
from pathlib import Path

from serving.artifacts import (
    MANIFEST_FILE,
    EncoderRecord,
    load_artifacts,
    write_artifacts,
)
from serving.encoders.base import ImageEncoder
from serving.encoders.factory import load_encoder
from serving.errors import InvalidInputError
from serving.evaluation.perturb import PERTURBATIONS
from serving.evaluation.results import DomainResult
from serving.features import FeatureSet, cached_features
from serving.preprocessing import policy_id
from serving.references import fit_references
from serving.scoring.calibration import Calibration
from serving.settings import ServingSettings
from serving.text_features import TextBranch
from serving.workflows import (
    AUTO,
    DEFAULT_HEADS,
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
    text: TextBranch | None = None,
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
        text: The text branch: the MLP then reads image ⊕ text features
            (`serving.text_features`); None trains on images only.

    Returns:
        Thresholds per head and of the decision (key ``decision``), the decision's
        name (``decision_head``) and the selection table.
    """
    train = features_for(settings, encoder, bench / "train", progress=progress)
    cal = features_for(settings, encoder, bench / "cal", progress=progress)
    if text is not None:
        train = text.attach(train, bench / "train")
        cal = text.attach(cal, bench / "cal")
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
    record = EncoderRecord.from_info(
        encoder.info,
        policy_id(settings.policy),
        text.source if text else None,
        text.encoder.info if text else None,
    )
    training: dict[str, object] = {
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
    if text is not None:
        roots = [bench / "train", bench / "cal"]
        training["text"] = text.provenance(roots, [train, cal])
    refs = fit_references(fitted, cal.x, rule)
    write_artifacts(out, record, fitted, cals, rule, training, refs)
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


def demo_options(tiny: bool, seed: int = 0) -> HeadOptions:
    """The head options of the demo profile (``make demo`` and ``make eval-demo``)."""
    return HeadOptions(
        seed=seed, mlp_epochs=4 if tiny else 12, rine_epochs=4 if tiny else 30
    )


def demo_paths(settings: ServingSettings, tiny: bool) -> tuple[Path, Path]:
    """(benchmark, artifacts) directories of the demo profile."""
    if tiny:
        return settings.home / "bench-tiny", settings.home / "artifacts-tiny"
    return settings.bench_dir, settings.artifacts_dir


def ensure_demo_artifacts(
    settings: ServingSettings, tiny: bool, progress: bool, seed: int = 0
) -> Path:
    """Build the benchmark and train the demo artifacts unless they exist.

    The decision is chosen by leave-one-family-out on the calibration split, as
    `serving.demo.run_demo` does; either command reuses the other's artifacts.
    """
    bench, artifacts = demo_paths(settings, tiny)
    if (artifacts / MANIFEST_FILE).is_file():
        return artifacts
    ensure_bench(settings, bench, tiny, seed, progress)
    logger.info("training heads into %s (first run only)", artifacts)
    train_and_save(
        settings,
        encoder_for(settings),
        bench,
        artifacts,
        list(DEFAULT_HEADS),
        AUTO,
        demo_options(tiny, seed),
        progress,
    )
    return artifacts
