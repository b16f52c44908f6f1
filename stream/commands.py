"""Application: the stream subcommands of ``synthguard``.

``worker`` (run a runner until SIGTERM), ``learner`` (the feedback learner),
``produce PATH...`` (publish upload events),
``up`` (Tansu + export + tritonserver + worker until Ctrl-C) and ``stream-demo``
(the one-command demo). `add_parsers` adds them to the CLI's subparsers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from serving.settings import ServingSettings
from stream.settings import StreamSettings

if TYPE_CHECKING:
    from stream.dev.stack import Stack

Command = Callable[[argparse.Namespace, ServingSettings, StreamSettings], int]


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``worker``, ``learner``, ``produce``, ``up`` and ``stream-demo``."""
    p = sub.add_parser(
        "worker", help="consume uploads, publish verdicts (SIGTERM drains)"
    )
    p.add_argument("--runner", choices=("aiokafka", "faust"), help="default: settings")

    sub.add_parser("learner", help="feedback topic into the kNN feedback bank")

    p = sub.add_parser("produce", help="publish upload events for image files")
    p.add_argument("paths", type=Path, nargs="+", help="files or folders (walked)")
    p.add_argument("--bootstrap", help="default $SYNTHGUARD_KAFKA__BOOTSTRAP_SERVERS")
    p.add_argument("--topic", help="default: the uploads topic")
    p.add_argument("--mode", choices=("auto", "inline", "uri"), default="auto")
    p.add_argument("--tenant", default="default")
    p.add_argument("--limit", type=int, help="publish at most this many")

    p = sub.add_parser("up", help="run Tansu, tritonserver and the worker until Ctrl-C")
    p.add_argument("--tiny", action="store_true", help="tiny benchmark and heads")
    p.add_argument("--artifacts", type=Path, help="trained artifacts to serve")

    p = sub.add_parser("stream-demo", help="one-command streaming demo with verdicts")
    p.add_argument("--tiny", action="store_true", help="tiny benchmark and heads")
    p.add_argument("--limit", type=int, default=40, help="images to publish")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mode", choices=("auto", "inline", "uri"), default="uri")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait")
    p.add_argument("--batch", type=int, default=4, help="worker batch size")


def cmd_worker(
    args: argparse.Namespace, _serving: ServingSettings, settings: StreamSettings
) -> int:
    """Run the configured runner until SIGTERM/SIGINT."""
    from stream.app import run_worker

    if args.runner:
        settings = settings.model_copy(update={"runner": args.runner})
    return run_worker(settings)


def cmd_learner(
    _args: argparse.Namespace, _serving: ServingSettings, settings: StreamSettings
) -> int:
    """Run the feedback learner until SIGTERM/SIGINT."""
    from stream.runners.learner_runner import run_learner

    return run_learner(settings)


def cmd_produce(
    args: argparse.Namespace, _serving: ServingSettings, settings: StreamSettings
) -> int:
    """Publish one event per image; one JSON line per event on stdout."""
    from stream.dev.produce import image_files, publish_files
    from stream.kafka_security import aiokafka_security

    files = image_files(args.paths)[: args.limit]
    published = asyncio.run(
        publish_files(
            args.bootstrap or settings.kafka.bootstrap_servers,
            args.topic or settings.kafka.uploads_topic,
            files,
            args.mode,
            settings.fetch.inline_max_bytes,
            args.tenant,
            aiokafka_security(settings.kafka),
        )
    )
    for p in published:
        sys.stdout.write(
            json.dumps({"image_id": p.image_id, "path": str(p.path)}) + "\n"
        )
    return 0


def cmd_up(
    args: argparse.Namespace, serving: ServingSettings, settings: StreamSettings
) -> int:
    """Start the stack, print its endpoints, run until SIGINT/SIGTERM."""
    from serving.jobs import ensure_demo_artifacts
    from stream.dev.assets import export_repo
    from stream.dev.stack import Stack

    progress = not args.no_progress
    artifacts = args.artifacts or ensure_demo_artifacts(serving, args.tiny, progress)
    work = Path(tempfile.mkdtemp(prefix="synthguard-up-"))
    repo = export_repo(artifacts, work / "model_repository")
    with Stack(repo, settings, work) as stack:
        asyncio.run(_serve_stack(stack))
    shutil.rmtree(work, ignore_errors=True)  # logs + exported repo; kept on an error
    return 0


async def _serve_stack(stack: Stack) -> None:
    await stack.start_worker()
    await stack.wait_serving()
    sys.stdout.write(json.dumps(stack.endpoints(), indent=2) + "\n")
    sys.stdout.write("serving; Ctrl-C stops everything\n")
    sys.stdout.flush()
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, done.set)
    await done.wait()
    await stack.stop_worker()


def cmd_stream_demo(
    args: argparse.Namespace, serving: ServingSettings, settings: StreamSettings
) -> int:
    """The one-command demo (see `stream.dev.demo`)."""
    from stream.dev.demo import DemoOptions, run_stream_demo

    opts = DemoOptions(
        tiny=args.tiny,
        limit=args.limit,
        seed=args.seed,
        mode=args.mode,
        timeout_s=args.timeout,
        progress=not args.no_progress,
        batch_max=args.batch,
    )
    return run_stream_demo(serving, settings, opts)


COMMANDS: dict[str, Command] = {
    "worker": cmd_worker,
    "learner": cmd_learner,
    "produce": cmd_produce,
    "up": cmd_up,
    "stream-demo": cmd_stream_demo,
}
