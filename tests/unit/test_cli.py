import json
from pathlib import Path

import pytest

from serving.cli import build_parser, main


def test_cli_lists_every_subcommand() -> None:
    text = build_parser().format_help()
    for cmd in (
        "bench-data",
        "features",
        "train",
        "calibrate",
        "eval",
        "score",
        "eval-demo",
    ):
        assert cmd in text


def test_cli_typed_error_exits_2_with_message(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("SYNTHGUARD_ENCODER", "no-such-encoder")
    assert main(["eval", "--mode", "standard", "--data", "."]) == 2
    assert "InvalidInputError: unknown encoder 'no-such-encoder'" in caplog.text


def test_cli_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "synthguard" in capsys.readouterr().out


def test_bench_data_builds_the_opt_in_families_asked_for(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "bench"
    # Spaces and a trailing comma, as a shell user types a list, name the same two.
    args = ["bench-data", "--tiny", "--families", "vdsr_x2, resize_conv_x2,"]
    assert main(["--no-progress", *args, "--out", str(out)]) == 0
    counts = json.loads(capsys.readouterr().out)["counts"]
    assert sorted(counts["test"]) == ["resize_conv_x2", "vdsr_x2"]
    assert {p.name for p in (out / "test").iterdir()} == {"resize_conv_x2", "vdsr_x2"}


def test_bench_data_rejects_an_unknown_family(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    args = ["bench-data", "--tiny", "--families", "no_such_gan"]
    assert main(["--no-progress", *args, "--out", str(tmp_path / "b")]) == 2
    assert "InvalidInputError: families" in caplog.text
