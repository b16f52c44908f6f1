"""Adapter: what the local server launchers share.

Used by `serving.triton.server` (tritonserver) and ``stream.dev.broker`` (Tansu): a free
loopback port and a SIGTERM-then-SIGKILL stop.
"""

from __future__ import annotations

import signal
import socket
import subprocess


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def terminate(proc: subprocess.Popen[bytes], timeout_s: float) -> int:
    """SIGTERM `proc`, wait up to `timeout_s`, SIGKILL if it overstays.

    Returns:
        The exit code (negative: the signal that ended it).
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
