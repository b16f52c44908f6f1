"""Unit tests for serving.evaluation.results and serving.evaluation.report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from serving.evaluation.report import Curves, markdown_table, write_report
from serving.evaluation.results import DomainResult, evaluate_domain, mean_row

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _data(
    rng: np.random.Generator, shift: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    y = np.r_[np.zeros(50), np.ones(50)].astype(int)
    return y, rng.normal(size=100) + shift * y


def _results(rng: np.random.Generator) -> tuple[list[DomainResult], Curves]:
    results, curves = [], {}
    for head in ("ufd_linear", "knn k=1"):
        for domain, shift in (("progan", 3.0), ("ldm_200", 1.0)):
            y, s = _data(rng, shift)
            probs = 1.0 / (1.0 + np.exp(-s))
            results.append(evaluate_domain(domain, head, y, s, probs, 0.5))
            curves[domain, head] = (y, s)
    return results, curves


def test_evaluate_domain_fields(rng: np.random.Generator) -> None:
    y = np.array([0, 0, 0, 1, 1, 1])
    s = np.array([-2.0, -1.0, 1.0, 0.5, 2.0, 3.0])
    r = evaluate_domain("d", "h", y, s, 1 / (1 + np.exp(-s)), 0.5)
    assert (r.n_real, r.n_fake) == (3, 3)
    assert r.auc == pytest.approx(8 / 9)
    assert (r.real_acc, r.fake_acc) == pytest.approx((2 / 3, 1.0))
    assert r.tpr_at_fpr1 == pytest.approx(2 / 3)


def test_mean_row_per_head(rng: np.random.Generator) -> None:
    results, _ = _results(rng)
    means = mean_row(results)
    assert [m.head for m in means] == ["ufd_linear", "knn k=1"]
    lin = [r for r in results if r.head == "ufd_linear"]
    assert means[0].ap == pytest.approx(np.mean([r.ap for r in lin]))
    assert means[0].n_real == 100
    assert means[0].threshold == 0.5


def test_markdown_table_has_mean_row_and_head_groups(rng: np.random.Generator) -> None:
    results, _ = _results(rng)
    table = markdown_table(results)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 2 + 1
    assert lines[-1].startswith("| **mean** |")
    assert "ufd_linear AP" in lines[0]
    assert "knn k=1 AUC" in lines[0]


def test_write_report_writes_json_md_png(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    results, curves = _results(rng)
    paths = write_report(tmp_path / "out", "UFD-19", results, curves, {"seed": 0})
    assert set(paths) == {
        "json",
        "markdown",
        "roc",
        "pr",
        "hist_ufd_linear",
        "hist_knn_k_1",
    }
    data = json.loads(paths["json"].read_text())
    assert len(data["results"]) == 4
    assert [m["domain"] for m in data["mean"]] == ["mean", "mean"]
    assert "| **mean** |" in paths["markdown"].read_text()
    for key in ("roc", "pr", "hist_ufd_linear", "hist_knn_k_1"):
        assert paths[key].read_bytes()[:8] == PNG_MAGIC


def test_write_report_nan_becomes_null(tmp_path: Path) -> None:
    r = DomainResult("d", "h", 1, 1, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, math.nan)
    paths = write_report(tmp_path, "t", [r], {}, {})
    assert json.loads(paths["json"].read_text())["results"][0]["threshold"] is None
    assert "n/a" in markdown_table([r], ("threshold",))
