"""Domain: trainer hyper-parameters that scoring-time code may import (no torch).

Heads record these in the artifact manifest and rebuild them at load, in processes
(the Triton python backend) that have numpy but neither torch nor scikit-learn.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class LinearProbeConfig:
    """Hyper-parameters of the linear-probe trainer (UnivFD defaults)."""

    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = 0.0
    batch_size: int = 256
    max_epochs: int = 100
    patience: int = 5
    min_delta: float = 0.001
    lr_decay: float = 10.0
    min_lr: float = 1e-6
    init_std: float = 0.02
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form."""
        return asdict(self)
