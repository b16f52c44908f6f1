"""Adapter: trivial-detector controls that a fair benchmark must defeat.

If file size, mean colour, contrast (pixel std), image area or the JPEG quantisation
table separated real from fake, a CLIP head could score well by learning the shortcut
instead of generator traces.
Each control here returns a ROC-AUC per domain; near 0.5 means no shortcut.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from serving.evaluation.dataset import discover_domains
from serving.scoring.metrics import roc_auc

CONTROLS = (
    "file_size",
    "mean_r",
    "mean_g",
    "mean_b",
    "brightness",
    "pixel_std",
    "pixels",
    "jpeg_qtable",
)


@dataclass(frozen=True)
class ControlResult:
    """AUC of one trivial detector on one domain, with the null's standard error."""

    domain: str
    control: str
    auc: float
    null_se: float


def _features(path: Path) -> dict[str, float]:
    with Image.open(path) as img:
        tables = getattr(img, "quantization", None) or {}
        qhash = hashlib.sha256(repr(sorted(tables.items())).encode()).digest()
        arr = np.asarray(img.convert("RGB"), dtype=np.float64)
    mean = arr.reshape(-1, 3).mean(axis=0)
    return {
        "file_size": float(path.stat().st_size),
        "mean_r": float(mean[0]),
        "mean_g": float(mean[1]),
        "mean_b": float(mean[2]),
        "brightness": float(mean.mean()),
        "pixel_std": float(arr.std()),
        "pixels": float(arr.shape[0] * arr.shape[1]),
        # A table-hash "score": any difference between classes shows up as AUC ≠ 0.5.
        "jpeg_qtable": float(int.from_bytes(qhash[:6], "big")),
    }


def null_auc_se(n_real: int, n_fake: int) -> float:
    """Standard error of ROC-AUC under the null (Hanley–McNeil, AUC = 0.5)."""
    return math.sqrt((n_real + n_fake + 1) / (12.0 * n_real * n_fake))


def run_controls(root: Path, max_per_class: int | None = None) -> list[ControlResult]:
    """AUC of every trivial detector on every domain of a UFD-layout tree."""
    out: list[ControlResult] = []
    for dom in discover_domains(root, max_per_class=max_per_class):
        feats = [_features(p) for p in (*dom.real, *dom.fake)]
        y = np.array([0] * len(dom.real) + [1] * len(dom.fake))
        se = null_auc_se(len(dom.real), len(dom.fake))
        for name in CONTROLS:
            s = np.array([f[name] for f in feats])
            out.append(ControlResult(dom.name, name, roc_auc(y, s), se))
    return out


def controls_table(results: list[ControlResult]) -> str:
    """Markdown: rows = domains, columns = controls, cells = AUC (null s.e. last)."""
    domains = list(dict.fromkeys(r.domain for r in results))
    lines = [
        "| domain | " + " | ".join(CONTROLS) + " | null s.e. |",
        "|---" * (len(CONTROLS) + 2) + "|",
    ]
    for d in domains:
        rows = {r.control: r for r in results if r.domain == d}
        cells = " | ".join(f"{rows[c].auc:.3f}" for c in CONTROLS)
        lines.append(f"| {d} | {cells} | {rows[CONTROLS[0]].null_se:.3f} |")
    return "\n".join(lines)
