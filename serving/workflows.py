"""Application: train, calibrate and evaluate heads on cached CLIP features.

Pure orchestration over `features`, `heads`, `scoring.calibration` and `evaluation`;
no I/O except what those modules do. The CLI and the demo call these functions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from serving.errors import InvalidInputError
from serving.evaluation.dataset import discover_domains
from serving.evaluation.results import DomainResult, evaluate_domain
from serving.features import FeatureSet, ImageItem
from serving.heads.base import Head, LabeledFeatures
from serving.heads.knn import KnnHead
from serving.heads.linear import LinearProbeHead
from serving.heads.mlp import MlpHead
from serving.heads.rine import RineHead, RineTrainConfig
from serving.scoring.calibration import Calibration, calibrate, fit_calibration
from serving.scoring.fusion import FUSION, Decision, fit_fusion
from serving.scoring.views import FeatureLayout, FeatureView
from serving.training.configs import LinearProbeConfig
from serving.training.mlp import MlpTrainConfig

logger = logging.getLogger(__name__)

DEFAULT_HEADS = ("knn_k9", "linear_probe", "mlp", "rine")
AUTO = "auto"  # decision chosen by leave-one-family-out (`choose_decision`)
POOLED = "pooled"
_KNN = re.compile(r"^knn_k(\d+)$")

Curves = dict[tuple[str, str], tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]]


# the "uncertain" band of the deployed decision holds this share of the calibration
# reals (its lower edge sits at target FPR + this). Leave one family out at 10 % FPR
# (python -m bench.uncertain_band; docs/benchmarks.md §9g), share of held-out images
# uncertain / decided accuracy: +0.05 -> 5.6 % / 0.852, 2x the FPR (the old rule) ->
# 9.9 % / 0.866, no band 0.844. Twice 10 % sent a tenth of the uploads to review.
UNCERTAIN_BAND: Final = 0.05


@dataclass(frozen=True)
class HeadOptions:
    """Hyper-parameters the CLI exposes; everything else keeps the papers' defaults."""

    seed: int = 0
    mlp_gamma: float = 0.1
    mlp_epochs: int = 32
    mlp_batch_size: int = 256
    probe_lr: float = 1e-4
    probe_batch_size: int | None = None  # None: scaled to the data, see probe_batch
    val_fraction: float = 0.2
    target_fpr: float = 0.01
    uncertain_fpr: float = 0.05
    fpr_candidates: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1)
    probe_recipe: str = "logreg_cv"
    probe_source: str = "blocks"
    probe_blocks: tuple[int, ...] = ()  # empty: from probe_first_block_fraction on
    # the last half of the blocks (6-11 of ViT-B/16's 12): best leave-one-family-out
    # AUC on the calibration split of the 8-family benchmark, by the rule of
    # `choose_decision` (python -m bench.selection; docs/benchmarks.md §7)
    probe_first_block_fraction: float = 1 / 2
    knn_source: str = "blocks"
    knn_blocks: tuple[int, ...] = ()
    mlp_source: str = "blocks"
    rine_epochs: int = 30
    # retrain RINE on every training row for the early-stopped epoch count? Off: the
    # early-stopped head transferred better leave-one-family-out (calibration-split
    # mean AUC 0.896 vs 0.884, docs/benchmarks.md §9d) and trains in half the time
    rine_refit: bool = False

    def view(self, layout: FeatureLayout, head: str) -> FeatureView:
        """The feature view of one head kind (``probe``, ``knn``, ``mlp``, ``rine``).

        A layout without per-block tokens (an encoder that has none) falls back to
        the L2-normalised embedding. With a text part in the layout the MLP's view
        appends it (Santosh et al.: image ⊕ text); the other heads stay image-only.
        """
        source, blocks = {
            "probe": (self.probe_source, self.probe_blocks),
            "knn": (self.knn_source, self.knn_blocks),
            "mlp": (self.mlp_source, ()),
            "rine": ("blocks", ()),
        }[head]
        text = head == "mlp" and layout.text_dim > 0
        if source == "embeds" or layout.n_blocks == 0:
            return FeatureView(layout, "embeds", norm="l2", text=text)
        if head == "probe" and not blocks:
            first = int(layout.n_blocks * self.probe_first_block_fraction)
            blocks = tuple(range(first, layout.n_blocks))
        return FeatureView(layout, "blocks", blocks=blocks, norm="l2", text=text)


@dataclass
class Evaluation:
    """Per-domain results and the score curves behind them."""

    results: list[DomainResult] = field(default_factory=list)
    curves: Curves = field(default_factory=dict)


def dataset_items(
    root: Path, max_per_class: int | None = None, seed: int = 0
) -> list[ImageItem]:
    """List a UnivFD-layout tree as labelled items (paths relative to `root`)."""
    items: list[ImageItem] = []
    for dom in discover_domains(root, max_per_class=max_per_class, seed=seed):
        items += [ImageItem(str(p.relative_to(root)), 0, dom.name) for p in dom.real]
        items += [ImageItem(str(p.relative_to(root)), 1, dom.name) for p in dom.fake]
    return items


def probe_batch(n_fit: int, opts: HeadOptions) -> int:
    """Linear-probe batch size: UnivFD's 256, shrunk on small data.

    UnivFD trained on ~720k images (thousands of steps per epoch); on a few hundred
    images batch 256 gives two steps per epoch and early stopping fires before the
    probe moves. We keep at least 16 steps per epoch (batch between 32 and 256).
    """
    if opts.probe_batch_size is not None:
        return opts.probe_batch_size
    return max(32, min(256, n_fit // 16))


def make_head(
    name: str, opts: HeadOptions, layout: FeatureLayout, n_fit: int = 0
) -> Head:
    """Build an unfitted head from its instance name (``knn_k<k>``, ``linear_probe``, ``mlp``).

    Args:
        name: Head instance name.
        opts: Hyper-parameters (including each head's feature view).
        layout: Layout of the flat feature rows the head will read.
        n_fit: Training rows (scales the UnivFD probe's batch).

    Raises:
        InvalidInputError: unknown name.
    """
    if m := _KNN.match(name):
        return KnnHead(opts.view(layout, "knn"), int(m.group(1)))
    if name == "linear_probe":
        probe = LinearProbeConfig(
            lr=opts.probe_lr, batch_size=probe_batch(n_fit, opts), seed=opts.seed
        )
        view = opts.view(layout, "probe")
        if opts.probe_recipe == "univfd":
            return LinearProbeHead(view, probe, "univfd")
        return LinearProbeHead(view, probe, "logreg_cv")
    if name == "mlp":
        cfg = MlpTrainConfig(
            gamma=opts.mlp_gamma,
            epochs=opts.mlp_epochs,
            batch_size=opts.mlp_batch_size,
            seed=opts.seed,
        )
        return MlpHead(opts.view(layout, "mlp"), cfg)
    if name == "rine":
        rine = RineTrainConfig(
            seed=opts.seed, max_epochs=opts.rine_epochs, refit=opts.rine_refit
        )
        return RineHead(opts.view(layout, "rine"), rine)
    raise InvalidInputError(
        f"unknown head {name!r}; use knn_k<1|3|5|9>, linear_probe, mlp, rine"
    )


def labeled(fs: FeatureSet) -> LabeledFeatures:
    """View a feature set as the heads' input type."""
    return LabeledFeatures(x=fs.x, y=fs.y, ids=fs.paths, groups=fs.families)


def split_train_val(
    fs: FeatureSet, val_fraction: float, seed: int
) -> tuple[FeatureSet, FeatureSet]:
    """Stratified (label × family) random split for early stopping / model selection."""
    rng = np.random.default_rng(seed)
    val = np.zeros(len(fs.y), dtype=bool)
    strata: dict[tuple[int, str], list[int]] = {}
    for i, (y, fam) in enumerate(zip(fs.y, fs.families, strict=True)):
        strata.setdefault((int(y), fam), []).append(i)
    for idx in strata.values():
        n_val = max(1, round(len(idx) * val_fraction)) if len(idx) > 1 else 0
        val[rng.permutation(idx)[:n_val]] = True
    if not val.any() or val.all():
        raise InvalidInputError(
            f"{len(fs.y)} training images are too few for a validation split"
        )
    return fs.select(~val), fs.select(val)


def fit_heads(
    train: FeatureSet, names: Sequence[str], opts: HeadOptions
) -> dict[str, Head]:
    """Fit every named head on `train` (an internal split selects epochs)."""
    fit_part, val_part = split_train_val(train, opts.val_fraction, opts.seed)
    layout = FeatureLayout.from_dict(train.meta.layout)
    heads: dict[str, Head] = {}
    for name in names:
        head = make_head(name, opts, layout, n_fit=len(fit_part.y))
        logger.info("fitting %s on %d images", name, len(fit_part.y))
        # the kNN banks use every train image; the grouped-CV probe selects C itself
        if isinstance(head, KnnHead) or getattr(head, "recipe", "") == "logreg_cv":
            head.fit(labeled(train), labeled(val_part))
        else:
            head.fit(labeled(fit_part), labeled(val_part))
        heads[name] = head
    return heads


def calibrate_heads(
    heads: dict[str, Head], cal: FeatureSet, opts: HeadOptions
) -> dict[str, Calibration]:
    """Fit a Platt calibration and the FPR-targeted threshold per head on `cal`."""
    return {
        name: _calibration(head.score(cal.x), cal.y, opts)
        for name, head in heads.items()
    }


def fit_decision(
    name: str, heads: dict[str, Head], cal: FeatureSet, opts: HeadOptions
) -> Decision:
    """The decision rule `name` (a head, or ``fusion`` of every head), fitted on `cal`.

    Raises:
        InvalidInputError: `name` is neither ``fusion`` nor one of `heads`.
    """
    if name != FUSION and name not in heads:
        raise InvalidInputError(f"decision {name!r} is not among {sorted(heads)}")
    members = heads if name == FUSION else {name: heads[name]}
    scores = {n: h.score(cal.x) for n, h in members.items()}
    return decision_on_scores(name, scores, cal.y, opts)


def decision_on_scores(
    name: str,
    cal_scores: Mapping[str, npt.NDArray[np.float32]],
    y: npt.NDArray[np.int64],
    opts: HeadOptions,
) -> Decision:
    """`fit_decision` from each head's raw scores on the calibration split.

    Args:
        name: A head instance in `cal_scores`, or ``fusion`` of all of them.
        cal_scores: Head instance -> (n,) raw scores on the calibration rows.
        y: Their labels.
        opts: The operating point (``target_fpr``, ``uncertain_fpr``).

    Raises:
        InvalidInputError: `name` is neither ``fusion`` nor in `cal_scores`.
    """
    if name == FUSION:
        fusion = fit_fusion(cal_scores)
        return Decision(FUSION, _calibration(fusion.score(cal_scores), y, opts), fusion)
    if name not in cal_scores:
        raise InvalidInputError(f"decision {name!r} is not among {sorted(cal_scores)}")
    return Decision(name, _calibration(cal_scores[name], y, opts))


def _calibration(
    scores: npt.NDArray[np.float32], y: npt.NDArray[np.int64], opts: HeadOptions
) -> Calibration:
    return fit_calibration(
        scores, y, target_fpr=opts.target_fpr, uncertain_fpr=opts.uncertain_fpr
    )


def evaluate_decision(
    decision: Decision,
    heads: dict[str, Head],
    data: FeatureSet,
    label: str = "decision",
    pooled: bool = False,
) -> Evaluation:
    """Score `data` with a decision rule, per family or pooled (rows named `label`)."""
    per_head = {n: heads[n].score(data.x) for n in decision.members}
    scores = decision.score(per_head)
    probs = calibrate(decision.calibration, scores)
    out = Evaluation()
    groups = [(f, data.family_mask(f)) for f in sorted(set(data.families))]
    if pooled:
        groups = [(POOLED, np.ones(len(data.y), dtype=bool))]
    for fam, mask in groups:
        y, s = data.y[mask], scores[mask]
        out.results.append(
            evaluate_domain(
                fam, label, y, s, probs[mask], decision.calibration.threshold
            )
        )
        out.curves[(fam, label)] = (y, s)
    return out


def evaluate(
    heads: dict[str, Head],
    cals: dict[str, Calibration],
    test: FeatureSet,
    per_family: bool = True,
    pooled: bool = True,
) -> Evaluation:
    """Score `test` with every head; results per family and/or pooled."""
    out = Evaluation()
    groups: list[tuple[str, npt.NDArray[np.bool_]]] = []
    if per_family:
        groups += [(f, test.family_mask(f)) for f in sorted(set(test.families))]
    if pooled:
        groups.append((POOLED, np.ones(len(test.y), dtype=bool)))
    for name, head in heads.items():
        scores = head.score(test.x)
        probs = calibrate(cals[name], scores)
        for dom, mask in groups:
            y, s = test.y[mask], scores[mask]
            out.results.append(
                evaluate_domain(dom, name, y, s, probs[mask], cals[name].threshold)
            )
            out.curves[(dom, name)] = (y, s)
    return out


@dataclass
class LofoRun:
    """Leave-one-family-out results.

    Attributes:
        test: Every head and each decision candidate on test[F] (the report).
        selection: The same on cal[F], which model selection reads (never test).
        candidates: The decision candidates evaluated (heads and ``fusion``), each
            at every target FPR of ``opts.fpr_candidates``: rows are named
            ``decision:<candidate>@<fpr>`` (`decision_label`).
    """

    test: Evaluation = field(default_factory=Evaluation)
    selection: Evaluation = field(default_factory=Evaluation)
    candidates: tuple[str, ...] = ()


def leave_one_family_out(
    train: FeatureSet,
    cal: FeatureSet,
    test: FeatureSet | None,
    names: Sequence[str],
    opts: HeadOptions,
    fixed: dict[str, Head] | None = None,
) -> LofoRun:
    """For each family F: fit on train∖F, calibrate on cal∖F, score cal[F] and test[F].

    Every head and every decision candidate (each trained head alone, and the
    fusion of all trained heads) is calibrated on cal∖F, so the threshold is as
    unseen as the family. `choose_decision` reads the cal[F] results only. Each
    fold trains its heads with `opts`, as the deployed heads are trained.

    Args:
        train: Training split features (all families).
        cal: Calibration split features.
        test: Test split features (None: selection only).
        names: Trainable heads to refit per fold.
        opts: Hyper-parameters.
        fixed: Heads that are not refitted (e.g. a third-party peer); they are
            recalibrated per fold on cal∖F like ours, and never decide.
    """
    run = LofoRun(candidates=(*names, FUSION) if len(names) > 1 else tuple(names))
    for fam in sorted(set(train.families)):
        logger.info("leave-one-family-out: holding out %s", fam)
        trained = fit_heads(train.select(~train.family_mask(fam)), names, opts)
        fold_cal = cal.select(~cal.family_mask(fam))
        heads = {**trained, **(fixed or {})}
        # every head scores cal∖F once; the 4 operating points × candidates reuse it
        scores = {n: h.score(fold_cal.x) for n, h in heads.items()}
        ours = {n: scores[n] for n in trained}
        decisions = [
            (decision_on_scores(c, ours, fold_cal.y, at_fpr(opts, fpr)), fpr)
            for c in run.candidates
            for fpr in opts.fpr_candidates
        ]
        cals = {n: _calibration(scores[n], fold_cal.y, opts) for n in heads}
        targets = [(run.selection, cal)] + ([(run.test, test)] if test else [])
        for into, split in targets:
            held = split.select(split.family_mask(fam))
            if len(set(held.y)) < 2:
                continue
            fold = evaluate(heads, cals, held, pooled=False)
            for d, fpr in decisions:
                part = evaluate_decision(d, trained, held, decision_label(d.name, fpr))
                fold.results += part.results
                fold.curves.update(part.curves)
            into.results += fold.results
            into.curves.update(fold.curves)
    return run


def at_fpr(opts: HeadOptions, fpr: float) -> HeadOptions:
    """`opts` with the threshold at `fpr` and the uncertain band `UNCERTAIN_BAND` wide."""
    return replace(opts, target_fpr=fpr, uncertain_fpr=min(0.5, fpr + UNCERTAIN_BAND))


def decision_label(name: str, fpr: float) -> str:
    """Row name of a decision candidate at one operating point."""
    return f"decision:{name}@{fpr:g}"


def choose_operating_fpr(
    selection: Evaluation, decision: str, opts: HeadOptions
) -> float:
    """The target FPR whose threshold gave the best mean held-out-family accuracy.

    The threshold is calibrated on cal∖F and applied to cal[F], so the choice
    rewards a threshold that transfers to an unseen generator. Ties go to the
    lower FPR.
    """
    means = {}
    for fpr in opts.fpr_candidates:
        rows = [r for r in selection.results if r.head == decision_label(decision, fpr)]
        means[fpr] = float(np.mean([r.acc for r in rows])) if rows else 0.0
    best = max(means.values())
    return min(f for f, m in means.items() if m >= best - 1e-9)


def choose_decision(
    selection: Evaluation, candidates: Sequence[str], fprs: Sequence[float]
) -> str:
    """The candidate with the best mean held-out-family AUC on the calibration split.

    Mean AUCs are compared rounded to 0.005; ties go to the better worst family,
    then to the better mean accuracy at the first operating point.
    """

    def key(name: str) -> tuple[float, float, float]:
        # the ranking (AUC) is the same at every operating point: read the first
        label = decision_label(name, fprs[0])
        rows = [r for r in selection.results if r.head == label]
        if not rows:
            return (0.0, 0.0, 0.0)
        aucs = [r.auc for r in rows]
        mean = float(np.mean(aucs))
        return (round(mean / 0.005), min(aucs), float(np.mean([r.acc for r in rows])))

    return max(candidates, key=key)
