"""Adapter: write evaluation results as JSON, Markdown tables and PNG plots.

Plots use matplotlib's object API (`Figure` + Agg canvas), never pyplot, so they
render without a display and leave no global figure state behind.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from serving.evaluation.results import MEAN_ROW, DomainResult, mean_row
from serving.scoring.metrics import average_precision, pr_curve, roc_auc, roc_curve

Curves = Mapping[tuple[str, str], tuple[npt.ArrayLike, npt.ArrayLike]]

COLUMN_TITLES: Final[dict[str, str]] = {
    "ap": "AP",
    "auc": "AUC",
    "acc": "acc",
    "real_acc": "r_acc",
    "fake_acc": "f_acc",
    "tpr_at_fpr1": "TPR@1%",
    "tpr_at_fpr5": "TPR@5%",
}
MAIN_COLUMNS: Final = ("ap", "acc", "auc")
ACC_COLUMNS: Final = ("real_acc", "fake_acc", "acc")
_DPI: Final = 110


def _fmt(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{100.0 * value:.2f}"


def markdown_table(
    results: Sequence[DomainResult],
    columns: Sequence[str] = MAIN_COLUMNS,
    *,
    with_mean: bool = True,
) -> str:
    """A Markdown table: one row per domain (+ mean), column groups per head.

    Values are percentages with two decimals. Reusable for any grouping: put the
    condition (LOFO fold, perturbation) in `domain` or `head`.

    Args:
        results: Rows to show (domain x head); mean rows in it are recomputed.
        columns: `DomainResult` metric fields, in display order.
        with_mean: Append the per-head mean row.

    Returns:
        The table, ending with a newline.
    """
    base = [r for r in results if r.domain != MEAN_ROW]
    rows = base + (mean_row(base) if with_mean else [])
    heads = list(dict.fromkeys(r.head for r in rows))
    domains = list(dict.fromkeys(r.domain for r in rows))
    cell = {(r.domain, r.head): r for r in rows}
    titles = [f"{h} {COLUMN_TITLES.get(c, c)}" for h in heads for c in columns]
    lines = [
        "| domain | " + " | ".join(titles) + " |",
        "|---|" + "---:|" * len(titles),
    ]
    for d in domains:
        vals = [
            _fmt(getattr(cell[d, h], c)) if (d, h) in cell else ""
            for h in heads
            for c in columns
        ]
        name = f"**{d}**" if d == MEAN_ROW else d
        lines.append(f"| {name} | " + " | ".join(vals) + " |")
    return "\n".join(lines) + "\n"


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    return obj


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _grid(n: int, width: float, height: float) -> tuple[Figure, list[Any]]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def _plot_one(ax: Any, kind: str, i: int, domain: str, y: Any, s: Any) -> None:
    style = {"lw": 1.0, "ls": ("-", "--", ":")[(i // 10) % 3]}  # 10 colours per cycle
    if kind == "roc":
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, label=f"{domain} ({100 * roc_auc(y, s):.1f})", **style)
    else:
        prec, rec, _ = pr_curve(y, s)
        ap = 100 * average_precision(y, s)
        ax.step(rec, prec, where="post", label=f"{domain} ({ap:.1f})", **style)


def _curve_plot(curves: Curves, kind: str, title: str, path: Path) -> None:
    heads = list(dict.fromkeys(h for _, h in curves))
    fig, axes = _grid(len(heads), 5.0, 4.5)
    for ax, head in zip(axes, heads, strict=True):
        items = [(d, ys) for (d, h), ys in curves.items() if h == head]
        for i, (domain, (y, s)) in enumerate(items):
            _plot_one(ax, kind, i, domain, y, s)
        xl, yl = ("FPR", "TPR") if kind == "roc" else ("recall", "precision")
        ax.set(title=head, xlabel=xl, ylabel=yl, xlim=(0, 1), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="lower right" if kind == "roc" else "lower left")
    fig.suptitle(f"{title}: {'ROC (AUC %)' if kind == 'roc' else 'PR (AP %)'}")
    fig.savefig(path, dpi=_DPI)


def _hist_plot(curves: Curves, head: str, title: str, path: Path) -> None:
    items = [(d, y, s) for (d, h), (y, s) in curves.items() if h == head]
    fig, axes = _grid(len(items), 3.5, 2.8)
    for ax, (domain, y, s) in zip(axes, items, strict=True):
        ya, sa = np.asarray(y), np.asarray(s, dtype=np.float64)
        bins = np.histogram_bin_edges(sa, bins=40)
        for label, cls, color in (("real", 0, "tab:blue"), ("fake", 1, "tab:red")):
            ax.hist(
                sa[ya == cls],
                bins=bins,
                histtype="stepfilled",
                alpha=0.5,
                color=color,
                label=label,
            )
        ax.set_title(domain, fontsize=9)
        ax.tick_params(labelsize=7)
    if axes:
        axes[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"{title}: {head} score histograms")
    fig.savefig(path, dpi=_DPI)


def write_report(
    out_dir: Path,
    title: str,
    results: list[DomainResult],
    curves: Curves,
    meta: dict[str, Any],
) -> dict[str, Path]:
    """Write results.json, results.md, roc.png, pr.png and one hist_<head>.png per head.

    Args:
        out_dir: Output folder (created if missing).
        title: Report title (Markdown heading and plot titles).
        results: Per-domain, per-head results (mean rows are recomputed).
        curves: ``(domain, head) -> (y, scores)`` for the ROC, PR and histogram plots.
        meta: JSON-serialisable context (encoder, heads, calibration, seeds, ...).

    Returns:
        Written paths keyed ``json``, ``markdown``, ``roc``, ``pr`` and ``hist_<head>``.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    base = [r for r in results if r.domain != MEAN_ROW]
    paths = {"json": out_dir / "results.json", "markdown": out_dir / "results.md"}
    payload = {
        "title": title,
        "meta": meta,
        "results": [asdict(r) for r in base],
        "mean": [asdict(r) for r in mean_row(base)],
    }
    text = json.dumps(_json_safe(payload), indent=2, allow_nan=False)
    paths["json"].write_text(text + "\n", encoding="utf-8")
    md = [
        f"# {title}\n",
        "AP / acc / AUC in %; acc at the deployed calibrated threshold.\n",
        markdown_table(base, MAIN_COLUMNS),
        "## Real / fake accuracy\n",
        markdown_table(base, ACC_COLUMNS),
        "## TPR at fixed FPR (threshold set on each domain's reals)\n",
        markdown_table(base, ("tpr_at_fpr1", "tpr_at_fpr5")),
    ]
    paths["markdown"].write_text("\n".join(md), encoding="utf-8")
    if curves:
        for kind in ("roc", "pr"):
            paths[kind] = out_dir / f"{kind}.png"
            _curve_plot(curves, kind, title, paths[kind])
        for head in dict.fromkeys(h for _, h in curves):
            key = f"hist_{_safe_name(head)}"
            paths[key] = out_dir / f"{key}.png"
            _hist_plot(curves, head, title, paths[key])
    return paths
