"""Application: per-tenant rolling windows of decision scores and their drift (PSI).

Each verdict's calibrated probability joins its tenant's window (the last
`DEFAULT_WINDOW` verdicts, a bounded deque); the window's population stability
index against the served model's calibration-split reference
(`serving.scoring.drift`) is what the worker exports as a gauge per tenant. Tenant
label cardinality is bounded: the first `DEFAULT_MAX_TENANTS` tenants seen by this
process get their own window, every later one shares `OTHER_TENANT` (so does a
tenant literally named ``other``). Windows live in memory, per worker replica; a
restart starts them empty.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from serving.scoring.drift import ScoreReference, psi

DEFAULT_WINDOW: Final = 500
DEFAULT_MAX_TENANTS: Final = 20
OTHER_TENANT: Final = "other"


@dataclass(frozen=True)
class TenantDrift:
    """One tenant's drift now: PSI of its window and the window's size."""

    tenant: str
    psi: float
    window_events: int


class DriftMonitor:
    """Rolling score windows per (bounded) tenant, compared with a reference.

    Args:
        reference: The calibration split's binned decision scores.
        window: Scores kept per tenant, >= 1.
        max_tenants: Tenants with their own window, >= 0; the rest share
            `OTHER_TENANT`.

    Raises:
        ValueError: `window` < 1 or `max_tenants` < 0.
    """

    def __init__(
        self,
        reference: ScoreReference,
        window: int = DEFAULT_WINDOW,
        max_tenants: int = DEFAULT_MAX_TENANTS,
    ) -> None:
        if window < 1 or max_tenants < 0:
            raise ValueError(f"bad drift window {window} / tenants {max_tenants}")
        self.reference = reference
        self._window = window
        self._max_tenants = max_tenants
        self._scores: dict[str, deque[float]] = {}

    def bucket(self, tenant: str) -> str:
        """The label a tenant's scores are counted under (itself or `OTHER_TENANT`)."""
        if tenant in self._scores or tenant == OTHER_TENANT:
            return tenant
        own = len(self._scores) - (OTHER_TENANT in self._scores)
        return tenant if own < self._max_tenants else OTHER_TENANT

    def observe(self, tenant: str, score: float) -> str:
        """Add one verdict's score; returns the tenant bucket it went to."""
        key = self.bucket(tenant)
        window = self._scores.setdefault(key, deque(maxlen=self._window))
        window.append(score)
        return key

    def drift(self, buckets: Iterable[str]) -> list[TenantDrift]:
        """PSI and window size of each given bucket that has scores."""
        return [
            TenantDrift(
                b, psi(self.reference, list(self._scores[b])), len(self._scores[b])
            )
            for b in sorted(set(buckets))
            if self._scores.get(b)
        ]
