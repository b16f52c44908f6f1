"""Configuration: the only reader of the environment (``SYNTHGUARD_`` prefix).

Read once at the CLI edge and passed down as a frozen object.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from serving.encoders.factory import EMBEDDED_DEFAULT


class ServingSettings(BaseSettings):
    """Settings for the detection CLI.

    Attributes:
        home: Working directory for benchmark data, feature cache, artifacts, reports.
        encoder: ``clip-vit-b16-int8`` (embedded default) or ``hf``.
        hf_clip_dir: Local Hugging Face CLIP directory for ``encoder=hf``.
        policy: Preprocessing policy name.
        esrgan_dir: Override for the ESRGAN model directory (benchmark builder).
        extra_photo_dirs: Extra directories of extracted Debian photo packages.
        threads: CPU threads for inference (None = all cores).
        text_source: Text source of the MLP's image ⊕ text branch for
            ``synthguard train`` (`serving.text_source`: ``none``, ``caption`` or
            ``prompt:<text>``); its text tower is ``hf_clip_dir``'s.
    """

    model_config = SettingsConfigDict(env_prefix="SYNTHGUARD_", frozen=True)

    home: Path = Path(".synthguard")
    encoder: str = EMBEDDED_DEFAULT
    hf_clip_dir: Path | None = None
    policy: str = "clip_default"
    esrgan_dir: Path | None = None
    extra_photo_dirs: list[Path] = Field(default_factory=list)
    threads: int | None = None
    text_source: str = "none"

    @property
    def bench_dir(self) -> Path:
        """Where `bench-data` writes the offline benchmark by default."""
        return self.home / "bench"

    @property
    def cache_dir(self) -> Path:
        """Feature cache directory."""
        return self.home / "features"

    @property
    def models_dir(self) -> Path:
        """Derived encoder graphs (the int8 CLIP with its per-block CLS output)."""
        return self.home / "models"

    @property
    def artifacts_dir(self) -> Path:
        """Default artifact directory for trained heads."""
        return self.home / "artifacts"

    @property
    def reports_dir(self) -> Path:
        """Default directory for evaluation reports."""
        return self.home / "reports"
