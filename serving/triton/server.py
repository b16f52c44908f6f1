"""Adapter: run the real ``tritonserver`` binary from the ``nvidia-pytriton`` wheel.

`TritonServer` builds the backends dir and environment (`serving.triton.install`),
binds loopback on free ports, logs to a file, polls ``/v2/health/ready`` and stops
with SIGTERM (SIGKILL only if the server overstays its stop timeout).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from serving.errors import InferenceUnavailableError, InvalidInputError
from serving.local_process import free_port, terminate
from serving.triton.install import (
    TritonInstall,
    build_backends_dir,
    locate_triton,
    server_env,
)

logger = logging.getLogger(__name__)

_POLL_S: Final = 0.25
_SAFE_PATH: Final = re.compile(r"[A-Za-z0-9_./+-]+")


class _ExitedEarlyError(InferenceUnavailableError):
    """The server process ended before it was ready."""


@dataclass(frozen=True)
class ServerOptions:
    """How to run the server.

    Attributes:
        http_port: HTTP port; 0 picks a free one.
        grpc_port: gRPC port; 0 picks a free one.
        metrics_port: Prometheus metrics port; 0 picks a free one.
        model_config_name: ``--model-config-name`` (``configs/<name>.pbtxt``).
        load_models: Load only these (``--model-control-mode=explicit``); None = all.
        ready_timeout_s: How long to wait for ``/v2/health/ready``.
        stop_timeout_s: How long SIGTERM may take before SIGKILL.
        extra_args: More ``tritonserver`` flags.
    """

    http_port: int = 0
    grpc_port: int = 0
    metrics_port: int = 0
    model_config_name: str | None = None
    load_models: tuple[str, ...] | None = None
    ready_timeout_s: float = 120.0
    stop_timeout_s: float = 30.0
    extra_args: tuple[str, ...] = ()


class TritonServer:
    """A ``tritonserver`` process on loopback, as a context manager.

    Args:
        repo: The model repository (from `serving.triton.export.export_repository`).
        options: Ports, variant and timeouts.
        work_dir: Where the backends dir and the log go; when None, a new temp dir
            that `stop` removes unless the server had died on its own (its log stays
            for a post-mortem).
        log_path: Server log file; ``work_dir/tritonserver.log`` when None.
    """

    def __init__(
        self,
        repo: Path,
        options: ServerOptions | None = None,
        work_dir: Path | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.repo = repo.resolve()
        self.options = options or ServerOptions()
        self._owns_work_dir = work_dir is None
        self.work_dir = work_dir or Path(tempfile.mkdtemp(prefix="synthguard-triton-"))
        self.log_path = log_path or self.work_dir / "tritonserver.log"
        self.http_port = self.grpc_port = self.metrics_port = 0
        self._pick_ports()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def http_url(self) -> str:
        """``127.0.0.1:<port>`` of the HTTP endpoint."""
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        """``127.0.0.1:<port>`` of the gRPC endpoint (for the client)."""
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        """The Prometheus metrics URL."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def command(self, install: TritonInstall, backends: Path) -> list[str]:
        """The full ``tritonserver`` command line."""
        o = self.options
        shm = f"synthguard{os.getpid()}-{secrets.token_hex(4)}-"
        cmd = [
            str(install.binary),
            f"--model-repository={self.repo}",
            f"--backend-directory={backends}",
            f"--cache-directory={install.caches}",
            "--http-address=127.0.0.1",
            f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1",
            f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            "--allow-cpu-metrics=true",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-verbose=0",
            # a per-server shm prefix: several servers may share one host
            f"--backend-config=python,shm-region-prefix-name={shm}",
            "--backend-config=python,shm-default-byte-size=4194304",
            "--backend-config=python,shm-growth-byte-size=1048576",
        ]
        if o.model_config_name:
            cmd.append(f"--model-config-name={o.model_config_name}")
        if o.load_models is not None:
            cmd.append("--model-control-mode=explicit")
            cmd += [f"--load-model={m}" for m in o.load_models]
        return [*cmd, *o.extra_args]

    def start(self) -> Self:
        """Launch the server and wait until it is ready.

        Raises:
            MissingWeightsError: nvidia-pytriton (or its stub) is not installed.
            InvalidInputError: the repository or work dir path has shell characters.
            InferenceUnavailableError: it exited or was not ready in time (the
                message ends with the log's tail).
        """
        if self._proc is not None:
            return self
        install = locate_triton()
        o = self.options
        attempts = 1 if all((o.http_port, o.grpc_port, o.metrics_port)) else 3
        for attempt in range(1, attempts + 1):
            try:
                self._launch(install)
            except _ExitedEarlyError as exc:
                if attempt == attempts or "already in use" not in str(exc):
                    raise
                # a free port can be taken between picking and binding: pick again
                logger.warning("tritonserver exited while starting; new ports, retry")
                self._pick_ports()
            else:
                break
        logger.info("tritonserver ready: grpc %s http %s", self.grpc_url, self.http_url)
        return self

    def _pick_ports(self) -> None:
        o = self.options
        self.http_port = o.http_port or free_port()
        self.grpc_port = o.grpc_port or free_port()
        self.metrics_port = o.metrics_port or free_port()

    def _launch(self, install: TritonInstall) -> None:
        for path in (self.repo, self.work_dir.resolve()):
            # the python backend starts its stub through `bash -c` without quoting
            if not _SAFE_PATH.fullmatch(str(path)):
                raise InvalidInputError(
                    f"{path}: Triton's python backend cannot start from a path with "
                    "spaces or shell characters; use [A-Za-z0-9_./+-] only"
                )
        backends = build_backends_dir(install, self.work_dir / "backends")
        cmd = self.command(install, backends)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logger.info("starting tritonserver: %s (log %s)", " ".join(cmd), self.log_path)
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - fixed binary, no shell
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=server_env(install, dict(os.environ)),
                start_new_session=True,  # the CLI's own signal handler stops it
            )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.options.ready_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                raise _ExitedEarlyError(
                    f"tritonserver exited before ready:\n{self.log_tail()}"
                )
            if _http_ok(url):
                return
            time.sleep(_POLL_S)
        raise InferenceUnavailableError(
            f"tritonserver not ready after {self.options.ready_timeout_s} s:\n"
            f"{self.log_tail()}"
        )

    def stop(self) -> int | None:
        """SIGTERM the server, wait, SIGKILL if it overstays; returns its exit code."""
        proc, self._proc = self._proc, None
        if proc is None:
            return None
        died = proc.poll() is not None
        rc = terminate(proc, self.options.stop_timeout_s)
        shutil.rmtree(self.work_dir / "backends", ignore_errors=True)
        if self._owns_work_dir and not died:
            shutil.rmtree(self.work_dir, ignore_errors=True)
        logger.info("tritonserver stopped (rc %s)", rc)
        return rc

    @property
    def running(self) -> bool:
        """Whether the server process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2.0) as resp:  # noqa: S310 - loopback http URL we built
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
