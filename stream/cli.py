"""Entry point: the ``synthguard`` command line with the stream subcommands.

`serving` never imports `stream`, so this is the top-level entry: it runs
``serving.cli.main`` with the stream's subcommands (``worker``, ``produce``, ``up``,
``stream-demo``, from `stream.commands`) registered on the same parser; arguments
are parsed once. Typed errors end a command with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from serving import cli as serving_cli
from serving.errors import ServingError
from serving.settings import ServingSettings
from stream.commands import COMMANDS, Command, add_parsers
from stream.errors import StreamError

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """The full ``synthguard`` parser: serving's commands plus the stream's."""
    return serving_cli.build_parser((add_parsers,))


def _with_stream_settings(command: Command) -> serving_cli.Command:
    def run(args: argparse.Namespace, settings: ServingSettings) -> int:
        from stream.settings import StreamSettings

        return command(args, settings, StreamSettings())

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    return serving_cli.main(
        argv,
        extensions=(add_parsers,),
        commands={name: _with_stream_settings(c) for name, c in COMMANDS.items()},
        errors=(StreamError, ServingError),
    )


if __name__ == "__main__":
    sys.exit(main())
