"""Adapter: read what the exporter placed in a Triton model version dir, without torch.

Training modules (`serving.heads.linear`, `serving.heads.mlp`) import torch; one
python-backend stub runs per model instance, so the served heads are rebuilt here from
the same safetensors files with the pure-numpy `serving.scoring` functions (the kNN
head needs only faiss). The integration tests check these scorers against the
in-process `serving.detector.Detector` path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

from serving.errors import ArtifactMismatchError, InvalidInputError, MissingWeightsError
from serving.hashing import sha256_file
from serving.heads.knn import KnnHead
from serving.scoring.mlp import MlpParams, mlp_logit
from serving.scoring.probe import probe_logit
from serving.triton.names import MANIFEST_FILE

FloatArray = npt.NDArray[np.float32]


class Scorer(Protocol):
    """A served head: raw (n, d) embeddings in, (n,) float32 scores out."""

    def score(self, x: FloatArray) -> FloatArray:
        """Score raw features; higher = more likely AI-generated."""
        ...


@dataclass(frozen=True, eq=False)
class LinearScorer:
    """The linear probe as a numpy logit."""

    weight: FloatArray
    bias: float

    def score(self, x: FloatArray) -> FloatArray:
        """(n,) logits of (n, d) raw features."""
        return probe_logit(x, self.weight, self.bias)


@dataclass(frozen=True, eq=False)
class MlpScorer:
    """The MLP head with BatchNorm folded, as a numpy logit."""

    params: MlpParams

    def score(self, x: FloatArray) -> FloatArray:
        """(n,) logits of (n, d) raw features."""
        return mlp_logit(x, self.params)


def read_manifest(version_dir: Path) -> dict[str, Any]:
    """Read the artifact manifest copied into a model version dir.

    Raises:
        MissingWeightsError: no manifest (the repository was not exported).
        ArtifactMismatchError: the file is not JSON.
    """
    path = version_dir / MANIFEST_FILE
    if not path.is_file():
        raise MissingWeightsError(
            f"{path} not found; write the repository with `synthguard export`"
        )
    try:
        doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ArtifactMismatchError(f"{path}: {exc}") from exc
    return doc


def head_record(manifest: dict[str, Any], instance: str) -> dict[str, Any]:
    """The manifest record (kind, params, calibration) of one head instance.

    Raises:
        ArtifactMismatchError: the manifest has no such head.
    """
    try:
        record: dict[str, Any] = manifest["heads"][instance]
    except (KeyError, TypeError) as exc:
        raise ArtifactMismatchError(f"head {instance!r} not in the manifest") from exc
    return record


def verify_head_files(
    version_dir: Path, manifest: dict[str, Any], instance: str
) -> None:
    """Check the sha256 of every manifest file belonging to one head instance.

    Raises:
        ArtifactMismatchError: a file is missing or differs.
    """
    prefix = f"heads/{instance}/"
    files = {k: v for k, v in manifest.get("files", {}).items() if k.startswith(prefix)}
    if not files:
        raise ArtifactMismatchError(f"the manifest lists no files for {instance!r}")
    for rel, expected in files.items():
        path = version_dir / rel
        if not path.is_file() or sha256_file(path) != expected:
            raise ArtifactMismatchError(
                f"{path} is missing or differs from the manifest"
            )


def load_scorer(version_dir: Path, instance: str) -> Scorer | KnnHead:
    """Rebuild one served head from its verified files.

    Args:
        version_dir: The model version dir holding ``manifest.json`` and ``heads/``.
        instance: Head instance name in the manifest (``linear_probe``, ``knn_k1``...).

    Raises:
        MissingWeightsError: no manifest.
        ArtifactMismatchError: files missing, altered, or of an unknown kind.
    """
    manifest = read_manifest(version_dir)
    record = head_record(manifest, instance)
    verify_head_files(version_dir, manifest, instance)
    directory, params = version_dir / "heads" / instance, record.get("params", {})
    try:
        if record["kind"] == "knn":
            return KnnHead.load(directory, params)
        if record["kind"] == "linear_probe":
            t = load_file(str(directory / params["files"]["weights"]))
            return LinearScorer(t["weight"].reshape(-1), float(t["bias"][0]))
        if record["kind"] == "mlp":
            return MlpScorer(_mlp_params(directory, params))
    except (KeyError, TypeError, ValueError, OSError, InvalidInputError) as exc:
        raise ArtifactMismatchError(f"head {instance!r} in {directory}: {exc}") from exc
    raise ArtifactMismatchError(f"unknown head kind {record['kind']!r}")


def _mlp_params(directory: Path, params: dict[str, Any]) -> MlpParams:
    # Same tensor names as `serving.heads.mlp` writes (``mlp_folded.safetensors``).
    t = load_file(str(directory / params["files"]["folded"]))
    n_hidden = int(params["n_hidden"])
    return MlpParams(
        input_mean=t["input_mean"],
        input_std=t["input_std"],
        hidden_weights=tuple(t[f"hidden.{i}.weight"] for i in range(n_hidden)),
        hidden_biases=tuple(t[f"hidden.{i}.bias"] for i in range(n_hidden)),
        out_weight=t["out.weight"],
        out_bias=float(t["out.bias"][0]),
        negative_slope=float(params["negative_slope"]),
    )
