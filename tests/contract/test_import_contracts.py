"""pyproject.toml's import contracts: every worker runtime module is kept off
`stream.dev`; only the CLI (``stream.__main__``, `stream.cli`, `stream.commands`)
may import it."""

from __future__ import annotations

import pkgutil
import tomllib
from pathlib import Path
from typing import Final

import stream

ROOT: Final = Path(__file__).resolve().parents[2]
CLI: Final = {"stream.__main__", "stream.cli", "stream.commands", "stream.dev"}


def test_every_runtime_module_is_in_the_dev_stack_contract() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    (contract,) = [c for c in contracts if c["forbidden_modules"] == ["stream.dev"]]
    top = {f"stream.{m.name}" for m in pkgutil.iter_modules(stream.__path__)}
    assert set(contract["source_modules"]) == top - CLI
