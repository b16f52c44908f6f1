from __future__ import annotations

import pytest

from stream.cli import build_parser, main


def test_cli_has_serving_and_stream_commands() -> None:
    parser = build_parser()
    for argv in (["eval-demo", "--tiny"], ["triton"], ["worker", "--runner", "faust"],
                 ["produce", "a.jpg", "--mode", "inline"], ["up"],
                 ["stream-demo", "--limit", "4"]):  # fmt: skip
        assert parser.parse_args(argv).command == argv[0]


def test_cli_rejects_unknown_runner() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["worker", "--runner", "kafka-streams"])


def test_cli_typed_error_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNTHGUARD_HOME", "/nonexistent/synthguard-home")
    # no artifacts and no benchmark: `up --artifacts` on a missing dir fails typed
    assert main(["up", "--artifacts", "/nonexistent/artifacts"]) == 2
