"""Application: what the stream stack needs on disk, built on first use.

The offline benchmark (``$SYNTHGUARD_HOME/bench``, or ``bench-tiny``), trained
artifacts (``artifacts`` / ``artifacts-tiny``: the same layout and settings
``synthguard eval-demo`` uses, so either command reuses the other's work) and a Triton
model repository exported from them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from serving.settings import ServingSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AssetPaths:
    """Where the benchmark and the artifacts live for a profile."""

    bench: Path
    artifacts: Path

    @classmethod
    def for_profile(cls, settings: ServingSettings, tiny: bool) -> AssetPaths:
        """The ``synthguard eval-demo`` locations (``--tiny`` uses its own)."""
        from serving.jobs import demo_paths

        return cls(*demo_paths(settings, tiny))


def ensure_bench(
    settings: ServingSettings, bench: Path, tiny: bool, progress: bool
) -> Path:
    """Build the offline benchmark unless it is there (same recipe as eval-demo)."""
    from serving.jobs import ensure_bench as build_if_missing

    if not (bench / "bench_manifest.json").is_file():
        logger.info("building the offline benchmark in %s (first run only)", bench)
    build_if_missing(settings, bench, tiny, 0, progress)
    return bench


def export_repo(artifacts: Path, out: Path) -> Path:
    """Export a Triton model repository into `out` (the encoder symlinked)."""
    from serving.triton.export import export_repository

    export_repository(artifacts, out, link_encoder=True)
    return out
