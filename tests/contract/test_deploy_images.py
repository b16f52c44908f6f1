"""deploy/docker: what the Dockerfiles copy exists, their requirement files pin the
same versions as requirements.txt, and each image's entry point imports with only
what its requirement file installs (no Docker engine here, so no image is built)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Final

import pytest

ROOT: Final = Path(__file__).resolve().parents[2]
DOCKERFILES: Final = sorted((ROOT / "deploy" / "docker").glob("*.Dockerfile"))
_PIN = re.compile(r"^([A-Za-z0-9_.-]+)(\[[^\]]*\])?(==[^\s;#]+)?")

# Importing these would mean the image needs the training / serving stack
WORKER_MUST_NOT_IMPORT: Final = (
    "torch", "transformers", "onnxruntime", "faiss", "sklearn", "skimage",
    "matplotlib", "scipy", "pytriton",
)  # fmt: skip
TRITON_SHIMS_MUST_NOT_IMPORT: Final = (
    "torch", "transformers", "sklearn", "skimage", "matplotlib", "scipy",
    "aiokafka", "faust", "tritonclient", "prometheus_client", "stream",
)  # fmt: skip


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        m = _PIN.match(line.strip())
        if m and not line.startswith("#"):
            out[m.group(1).lower()] = m.group(3) or ""
    return out


@pytest.mark.parametrize("name", ["requirements-worker.txt", "requirements-triton.txt"])
def test_image_requirements_pin_what_requirements_txt_pins(name: str) -> None:
    full, image = pins(ROOT / "requirements.txt"), pins(ROOT / name)
    assert image
    for package, pin in image.items():
        assert package in full, f"{name}: {package} is not in requirements.txt"
        assert pin == full[package], f"{name}: {package}{pin} vs {full[package]}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_existing_sources(dockerfile: Path) -> None:
    text = dockerfile.read_text()
    assert re.search(r"^USER \d+:\d+$", text, re.M), (
        "images run as a numeric non-root user"
    )
    for line in text.splitlines():
        if line.startswith("COPY") and "--from=" not in line:
            *sources, _dest = line.split()[1:]
            for src in (s for s in sources if not s.startswith("--")):
                if src.startswith("build/"):  # made by `synthguard export` first
                    continue
                assert (ROOT / src).exists(), f"{dockerfile.name}: {src} missing"


def _imports_without(
    modules: tuple[str, ...], code: str
) -> subprocess.CompletedProcess[str]:
    blocker = (
        "import sys, importlib.abc\n"
        f"BLOCK = {set(modules)!r}\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in BLOCK:\n"
        "            raise ImportError(f'image lacks {name}')\n"
        "sys.meta_path.insert(0, Block())\n"
    )
    return subprocess.run(
        [sys.executable, "-c", blocker + code],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip


def test_worker_entry_point_needs_only_the_worker_image() -> None:
    out = _imports_without(
        WORKER_MUST_NOT_IMPORT,
        "import stream.worker_main, stream.runners.aiokafka_runner,"
        " stream.runners.faust_runner, stream.runners.learner_runner",
    )
    assert out.returncode == 0, out.stderr
    assert (
        'ENTRYPOINT ["python", "-m", "stream.worker_main"]'
        in (ROOT / "deploy" / "docker" / "worker.Dockerfile").read_text()
    )


def test_triton_shims_need_only_the_triton_image() -> None:
    out = _imports_without(
        TRITON_SHIMS_MUST_NOT_IMPORT,
        "import serving.triton.backend, serving.artifacts,"
        " serving.encoders.onnx_clip, serving.index.faiss_index",
    )
    assert out.returncode == 0, out.stderr


def test_worker_entry_point_reports_bad_settings(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "stream.worker_main"],
        capture_output=True, text=True, cwd=ROOT, check=False, timeout=60,
        env={"PATH": "/usr/bin:/bin", "SYNTHGUARD_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
             "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert out.returncode == 2
    assert "needs sasl_username and sasl_password" in out.stderr
