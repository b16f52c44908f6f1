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
