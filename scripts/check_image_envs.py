"""Run the product on the two container images' Python sets, without Docker.

Builds two venvs under ``build/image-envs/``: ``worker`` from
``requirements-worker.txt``, and ``triton`` from ``requirements-triton.txt`` plus
``nvidia-pytriton`` (binary and stub only) and this checkout installed without deps.
It then exports the model repository with ``--no-source-path``, as the Triton image
does, and runs tritonserver from the triton venv and the worker from the worker venv.
The real Tansu broker sits between them. Finally it publishes benchmark test images
and checks that every one gets a verdict.

Needs trained artifacts and the benchmark (``make demo`` or ``make eval-demo`` first).
Run with the development venv: ``.venv/bin/python scripts/check_image_envs.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "e2e"), str(ROOT / "tests"), str(ROOT)]

from stream_harness import StreamCase, file_events  # noqa: E402

from serving.settings import ServingSettings  # noqa: E402
from stream.dev.broker import TansuBroker  # noqa: E402

PIP = ["-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
SERVE = """
import json, signal, sys, time
from pathlib import Path
from serving.triton.server import ServerOptions, TritonServer
srv = TritonServer(Path(sys.argv[1]), ServerOptions(), work_dir=Path(sys.argv[2])).start()
print(json.dumps({"grpc": srv.grpc_url}), flush=True)
signal.signal(signal.SIGTERM, lambda *a: (srv.stop(), sys.exit(0)))
while True:
    time.sleep(1)
"""


def venv(path: Path, *installs: list[str]) -> Path:
    """Create (once) a venv and run each pip install; returns its python."""
    python = path / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(path)], check=True)
        for args in installs:
            subprocess.run([str(python), *PIP, *args], check=True)
    size = subprocess.run(["du", "-sh", str(path)], capture_output=True, text=True)
    print(f"venv {path.name}: {size.stdout.split()[0]}", flush=True)
    return python


def start_triton(
    python: Path, repo: Path, work: Path
) -> tuple[subprocess.Popen[bytes], str]:
    """Start tritonserver from `python`'s venv; returns the process and gRPC address."""
    work.mkdir(parents=True, exist_ok=True)
    out = work / "serve.out"
    with out.open("wb") as stdout, (work / "serve.err").open("wb") as stderr:
        proc = subprocess.Popen(
            [str(python), "-c", SERVE, str(repo), str(work)],
            stdout=stdout, stderr=stderr, cwd=work,
        )  # fmt: skip
    for _ in range(1800):
        if out.read_text().strip():
            return proc, str(json.loads(out.read_text())["grpc"])
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit(f"triton failed:\n{(work / 'serve.err').read_text()[-3000:]}")


def prepare(n: int) -> tuple[Path, Path, Path, list[Path]]:
    """Both venvs, the exported repository and `n` benchmark test images."""
    envs = ROOT / "build" / "image-envs"
    worker_py = venv(
        envs / "worker",
        ["-r", str(ROOT / "requirements-worker.txt")],
        ["--no-deps", str(ROOT)],
    )
    triton_py = venv(
        envs / "triton",
        ["-r", str(ROOT / "requirements-triton.txt")],
        ["--no-deps", "nvidia-pytriton==0.7.0", str(ROOT)],
    )
    repo = envs / "model_repository"
    subprocess.run(
        [sys.executable, "-m", "stream", "export", "--no-source-path", "--out", str(repo)],
        check=True, stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip
    images = sorted((ServingSettings().bench_dir / "test").rglob("*.jpg"))[:n]
    if len(images) < n:
        raise SystemExit(
            "no benchmark test images: run `make demo` or `make eval-demo`"
        )
    return worker_py, triton_py, repo, images


def start_worker(
    python: Path, env: dict[str, str], log: Path
) -> subprocess.Popen[bytes]:
    """The container entry point from `python`'s venv (no checkout on its path)."""
    with log.open("wb") as err:
        return subprocess.Popen(
            [str(python), "-m", "stream.worker_main"],
            env=env, cwd=log.parent, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip


async def publish_and_read(
    worker_py: Path, grpc: str, images: list[Path]
) -> dict[str, object]:
    """Broker + worker; publish `images`, read their verdicts, stop the worker."""
    with TansuBroker() as broker:
        case = StreamCase(broker.bootstrap, grpc)
        await case.create_topics()
        payloads, ids = file_events(images, "image-env-")
        env = {k: v for k, v in case.env().items() if k != "PYTHONPATH"}
        log = ROOT / "build" / "image-envs" / "worker.err"
        worker = start_worker(worker_py, env, log)
        start = time.monotonic()
        await case.produce(payloads)
        verdicts = await case.verdicts_read(len(payloads), 300)
        seconds = time.monotonic() - start
        worker.send_signal(signal.SIGTERM)
        rc = await asyncio.to_thread(worker.wait, 60)
    return {
        "events": len(payloads),
        "verdicts": len(verdicts),
        "all_answered": sorted(v["image_id"] for v in verdicts) == sorted(ids),
        "heads": sorted(verdicts[0]["head_scores"]) if verdicts else [],
        "seconds": round(seconds, 1),
        "worker_exit": rc,
    }


def main() -> int:
    """Parse ``-n`` and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=12, help="images to publish")
    args = parser.parse_args()
    os.environ.pop("PYTHONPATH", None)
    worker_py, triton_py, repo, images = prepare(args.n)
    triton, grpc = start_triton(triton_py, repo, ROOT / "build" / "image-envs" / "run")
    try:
        report = asyncio.run(publish_and_read(worker_py, grpc, images))
    finally:
        triton.send_signal(signal.SIGTERM)
        triton.wait(timeout=60)
    print(json.dumps(report), flush=True)
    return 0 if report["all_answered"] and report["worker_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
