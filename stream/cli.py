"""Entry point: the ``synthguard`` command line with the stream subcommands.

`serving` never imports `stream`, so this is the top-level entry: it takes
``serving.cli.build_parser()``, adds ``worker``, ``produce``, ``up`` and
``stream-demo`` (`stream.commands`), and dispatches the other commands to
``serving.commands`` exactly as ``serving.cli.main`` does. Typed errors end a
command with a one-line message and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from serving import cli as serving_cli
from serving.errors import ServingError
from serving.settings import ServingSettings
from stream.commands import COMMANDS, add_parsers
from stream.errors import StreamError

logger = logging.getLogger(__name__)


def _subparsers(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise TypeError("serving.cli.build_parser() has no subcommands")


def build_parser() -> argparse.ArgumentParser:
    """The full ``synthguard`` parser: serving's commands plus the stream's."""
    parser = serving_cli.build_parser()
    add_parsers(_subparsers(parser))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code."""
    args = build_parser().parse_args(argv)
    if args.command not in COMMANDS:
        return serving_cli.main(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    from stream.settings import StreamSettings

    try:
        return COMMANDS[args.command](args, ServingSettings(), StreamSettings())
    except (StreamError, ServingError) as exc:
        logger.error("%s: %s", type(exc).__name__, exc)  # noqa: TRY400 - message is the point
        return 2


if __name__ == "__main__":
    sys.exit(main())
