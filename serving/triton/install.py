"""Adapter: locate the ``nvidia-pytriton`` wheel's tritonserver and prepare its launch.

Recipe (docs/serving.md; verified on the CPU build machines): copy the wheel's python
backend into a fresh backends dir with the stub built for the running Python minor
version; put the interpreter's ``LIBDIR`` first on ``LD_LIBRARY_PATH`` (else the stub
links the system libpython against our stdlib) and this environment's ``bin`` first
on ``PATH`` (the stub ignores ``PYTHONPATH`` and finds ``python3`` there).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from serving.errors import MissingWeightsError

PYTRITON_PACKAGE: Final = "pytriton"
PYTRITON_VERSION: Final = "0.7.0"
INSTALL_HINT: Final = (
    f"install it with: pip install nvidia-pytriton=={PYTRITON_VERSION} "
    "(ships tritonserver 2.51 with the python backend; or run `make setup`)"
)
STUB: Final = "triton_python_backend_stub"


@dataclass(frozen=True)
class TritonInstall:
    """Where the wheel keeps the server, the python backend, its stubs and libs."""

    root: Path

    @property
    def binary(self) -> Path:
        """The ``tritonserver`` executable."""
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        """The wheel's ``backends/python`` directory."""
        return self.root / "backends" / "python"

    @property
    def caches(self) -> Path:
        """The response-cache plugins directory."""
        return self.root / "caches"

    @property
    def libs(self) -> Path:
        """The wheel's bundled shared libraries (``nvidia_pytriton.libs``)."""
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self, minor: str) -> Path:
        """The python backend stub built for Python ``3.<minor>``."""
        return self.root / "python_backend_stubs" / minor / STUB


def locate_triton() -> TritonInstall:
    """Find the tritonserver shipped in ``nvidia-pytriton`` without importing it.

    Raises:
        MissingWeightsError: the wheel (or its binary) is not installed.
    """
    spec = importlib.util.find_spec(PYTRITON_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"nvidia-pytriton is not installed; {INSTALL_HINT}")
    root = Path(next(iter(spec.submodule_search_locations))) / "tritonserver"
    install = TritonInstall(root)
    if not install.binary.is_file():
        raise MissingWeightsError(f"{install.binary} is missing; {INSTALL_HINT}")
    return install


def build_backends_dir(install: TritonInstall, target: Path) -> Path:
    """Copy the python backend and this Python's stub into ``target/python``.

    Raises:
        MissingWeightsError: the wheel has no stub for this Python version.
    """
    minor = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = install.stub(minor)
    if not stub.is_file():
        raise MissingWeightsError(
            f"no python backend stub for Python {minor} at {stub}"
        )
    backend = target / "python"
    shutil.copytree(install.python_backend, backend, dirs_exist_ok=True)
    shutil.copy2(stub, backend / STUB)
    return target


def server_env(install: TritonInstall, base: dict[str, str]) -> dict[str, str]:
    """The environment the server and its stubs need (see the module docstring)."""
    libdir = str(sysconfig.get_config_var("LIBDIR") or "")
    ld = [libdir, str(install.libs), base.get("LD_LIBRARY_PATH", "")]
    path = [str(Path(sys.executable).parent), base.get("PATH", "")]
    return {
        **base,
        "LD_LIBRARY_PATH": os.pathsep.join(p for p in ld if p),
        "PATH": os.pathsep.join(p for p in path if p),
    }
