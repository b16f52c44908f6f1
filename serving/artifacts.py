"""Adapter: trained-artifact directories and their checksummed manifest.

Layout::

    <dir>/manifest.json          everything model-coupled: encoder, policy, dims, k,
                                 calibration, thresholds, versions, sha256 of each file
    <dir>/heads/<name>/...       head weights (safetensors / JSON only, never pickle)

`load_artifacts` verifies every file hash and, when given the running encoder, that
the encoder and dimensions match what the heads were trained on.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from serving import __version__
from serving.encoders.base import EncoderInfo
from serving.errors import ArtifactMismatchError, InvalidInputError, MissingWeightsError
from serving.hashing import sha256_file
from serving.heads.base import Head
from serving.heads.knn import KnnHead
from serving.heads.linear import LinearProbeHead
from serving.heads.mlp import MlpHead
from serving.heads.rine import RineHead
from serving.references import References
from serving.scoring.calibration import Calibration
from serving.scoring.drift import ScoreReference
from serving.scoring.fusion import FUSION, Decision, Fusion
from serving.scoring.novelty import Novelty
from serving.scoring.views import FeatureLayout
from serving.text_source import TextSource

MANIFEST_FILE: Final = "manifest.json"
FORMAT_VERSION: Final = 2
HEAD_KINDS: Final[
    dict[str, type[KnnHead] | type[LinearProbeHead] | type[MlpHead] | type[RineHead]]
] = {
    "knn": KnnHead,
    "linear_probe": LinearProbeHead,
    "mlp": MlpHead,
    "rine": RineHead,
}


class TextTowerRecord(BaseModel):
    """The CLIP text tower whose embeddings the text branch was trained on."""

    model_config = ConfigDict(frozen=True)

    id: str
    sha256: str


class EncoderRecord(BaseModel):
    """The encoder and preprocessing the heads were trained on.

    ``text_source`` (`serving.text_source`) says where the MLP's text comes from;
    with a source other than ``none``, ``text_dim`` is the text embedding's width and
    ``text_tower`` identifies the tower. ``text_tower`` is left out of the JSON when
    absent, so image-only manifests are written exactly as before the text branch.
    """

    model_config = ConfigDict(frozen=True)

    id: str
    sha256: str
    embed_dim: int
    policy: str
    n_blocks: int
    block_dim: int
    token: str
    normalised_output: bool = False
    text_source: str = "none"
    text_dim: int = 0
    text_tower: TextTowerRecord | None = Field(
        default=None, exclude_if=lambda v: v is None
    )

    @model_validator(mode="after")
    def _text_consistent(self) -> EncoderRecord:
        try:
            enabled = TextSource.parse(self.text_source).enabled
        except InvalidInputError as exc:
            raise ValueError(str(exc)) from exc
        if enabled != (self.text_dim > 0) or enabled != (self.text_tower is not None):
            raise ValueError(
                f"text source {self.text_source!r} needs text_dim > 0 and a text "
                "tower exactly when it is not 'none'"
            )
        return self

    @property
    def layout(self) -> FeatureLayout:
        """Layout of the flat feature rows the heads were trained on (text included)."""
        return FeatureLayout(
            self.embed_dim, self.n_blocks, self.block_dim, self.text_dim
        )

    @property
    def text(self) -> TextSource:
        """The parsed text source."""
        return TextSource.parse(self.text_source)

    @classmethod
    def from_info(
        cls,
        info: EncoderInfo,
        policy: str,
        text_source: TextSource | None = None,
        text_tower: EncoderInfo | None = None,
    ) -> EncoderRecord:
        """Build from a running encoder's identity and the versioned policy id.

        Args:
            info: The image encoder.
            policy: Versioned preprocessing policy id.
            text_source: Where the MLP's text comes from (None: ``none``).
            text_tower: The model whose text tower encodes it (needed with a source).

        Raises:
            ArtifactMismatchError: A text source without a text tower.
        """
        source = text_source or TextSource()
        tower = None
        if source.enabled:
            if text_tower is None or text_tower.text_dim <= 0:
                raise ArtifactMismatchError(
                    f"text source {str(source)!r} needs a CLIP text tower"
                )
            tower = TextTowerRecord(
                id=text_tower.encoder_id, sha256=text_tower.weights_sha256
            )
        return cls(
            id=info.encoder_id,
            sha256=info.weights_sha256,
            embed_dim=info.embed_dim,
            policy=policy,
            n_blocks=info.n_blocks,
            block_dim=info.block_dim,
            token=info.token,
            normalised_output=info.normalised,
            text_source=str(source),
            text_dim=text_tower.text_dim if tower and text_tower else 0,
            text_tower=tower,
        )


class HeadRecord(BaseModel):
    """One trained head: kind, its own parameters, and its calibration."""

    model_config = ConfigDict(frozen=True)

    kind: str
    params: dict[str, Any]
    calibration: dict[str, Any]


class FusionRecord(BaseModel):
    """The fused decision (`serving.scoring.fusion.Fusion`) and its calibration."""

    model_config = ConfigDict(frozen=True)

    members: list[str]
    means: list[float]
    stds: list[float]
    calibration: dict[str, Any]


class Manifest(BaseModel):
    """The artifact manifest (JSON), validated on load.

    ``decision_head`` names a head instance, or ``fusion`` (then ``fusion`` holds the
    fused decision over served heads). ``novelty`` (`serving.scoring.novelty`) and
    ``score_reference`` (`serving.scoring.drift`) were added later and are optional:
    a manifest without them loads, with novelty off and no drift reference.
    """

    model_config = ConfigDict(frozen=True)

    format_version: int
    synthguard_version: str
    created_utc: str
    encoder: EncoderRecord
    heads: dict[str, HeadRecord]
    decision_head: str
    training: dict[str, Any]
    files: dict[str, str]
    fusion: FusionRecord | None = None
    novelty: dict[str, Any] | None = None
    score_reference: dict[str, Any] | None = None

    def novelty_rule(self) -> Novelty | None:
        """The novelty threshold, or None (older artifacts: novelty off).

        Raises:
            ArtifactMismatchError: The record is malformed.
        """
        if self.novelty is None:
            return None
        try:
            return Novelty.from_dict(self.novelty)
        except InvalidInputError as exc:
            raise ArtifactMismatchError(str(exc)) from exc

    def drift_reference(self) -> ScoreReference | None:
        """The calibration split's binned decision scores, or None (older artifacts).

        Raises:
            ArtifactMismatchError: The record is malformed.
        """
        if self.score_reference is None:
            return None
        try:
            return ScoreReference.from_dict(self.score_reference)
        except InvalidInputError as exc:
            raise ArtifactMismatchError(str(exc)) from exc

    def decision(self) -> Decision:
        """The decision rule: head or fusion, with its calibration.

        Raises:
            ArtifactMismatchError: The decision names no head or fusion present.
        """
        if self.decision_head == FUSION:
            if self.fusion is None or not set(self.fusion.members) <= set(self.heads):
                raise ArtifactMismatchError("decision 'fusion' without its members")
            rec = self.fusion
            fusion = Fusion(tuple(rec.members), tuple(rec.means), tuple(rec.stds))
            return Decision(FUSION, Calibration.from_dict(rec.calibration), fusion)
        head = self.heads.get(self.decision_head)
        if head is None:
            raise ArtifactMismatchError(f"decision head {self.decision_head!r} absent")
        return Decision(self.decision_head, Calibration.from_dict(head.calibration))


@dataclass(frozen=True)
class Artifacts:
    """Loaded, verified artifacts."""

    directory: Path
    manifest: Manifest
    heads: dict[str, Head]
    calibrations: dict[str, Calibration]
    decision: Decision
    novelty: Novelty | None = None


def write_artifacts(
    directory: Path,
    encoder: EncoderRecord,
    heads: dict[str, Head],
    calibrations: dict[str, Calibration],
    decision: str | Decision,
    training: dict[str, Any],
    references: References | None = None,
) -> Manifest:
    """Save heads and write a manifest hashing every file.

    Args:
        directory: Output directory (created; existing head folders are replaced).
        encoder: Encoder and policy record.
        heads: Fitted heads by instance name (e.g. ``knn_k1``, ``linear_probe``).
        calibrations: Calibration per head name (same keys as `heads`).
        decision: The head (instance name) whose calibrated probability decides
            verdicts, or a fused `Decision` over some of `heads`.
        training: Provenance: data hashes, families, counts, timings.
        references: Novelty threshold and drift reference (`serving.references`).

    Returns:
        The manifest written to ``<directory>/manifest.json``.
    """
    decision_name = decision if isinstance(decision, str) else decision.name
    fusion: FusionRecord | None = None
    if isinstance(decision, Decision) and decision.fusion is not None:
        fusion = FusionRecord(
            **decision.fusion.to_dict(), calibration=decision.calibration.to_dict()
        )
    if not set(fusion.members if fusion else [decision_name]) <= set(heads):
        raise ArtifactMismatchError(
            f"decision {decision_name!r} not among {sorted(heads)}"
        )
    refs = references or References()
    records: dict[str, HeadRecord] = {}
    for name, head in heads.items():
        params = head.save(directory / "heads" / name)
        kind = _kind_of(head)
        records[name] = HeadRecord(
            kind=kind, params=params, calibration=calibrations[name].to_dict()
        )
    files = {
        str(p.relative_to(directory)): sha256_file(p)
        for p in sorted((directory / "heads").rglob("*"))
        if p.is_file()
    }
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        synthguard_version=__version__,
        created_utc=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        encoder=encoder,
        heads=records,
        decision_head=decision_name,
        training=training,
        files=files,
        fusion=fusion,
        novelty=refs.novelty.to_dict() if refs.novelty else None,
        score_reference=(
            refs.score_reference.to_dict() if refs.score_reference else None
        ),
    )
    (directory / MANIFEST_FILE).write_text(manifest.model_dump_json(indent=2))
    return manifest


def _kind_of(head: Head) -> str:
    for kind, cls in HEAD_KINDS.items():
        if isinstance(head, cls):
            return kind
    raise ArtifactMismatchError(f"cannot save head of type {type(head).__name__}")


def read_manifest(directory: Path) -> Manifest:
    """Read and validate ``manifest.json`` (no hash checks).

    Raises:
        MissingWeightsError: no manifest in `directory`.
        ArtifactMismatchError: the manifest is malformed or of another format.
    """
    path = directory / MANIFEST_FILE
    if not path.is_file():
        raise MissingWeightsError(
            f"{path} not found; train heads first with `synthguard train` (or `make eval-demo`)"
        )
    try:
        manifest = Manifest.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ArtifactMismatchError(f"{path} is not a valid manifest: {exc}") from exc
    if manifest.format_version != FORMAT_VERSION:
        raise ArtifactMismatchError(
            f"{path}: format {manifest.format_version}, this code reads {FORMAT_VERSION}"
        )
    return manifest


def verify_files(directory: Path, manifest: Manifest, prefix: str = "") -> None:
    """Check that every file listed in the manifest exists with its sha256.

    Args:
        directory: Artifact directory.
        manifest: Its manifest.
        prefix: Only check files under this relative prefix (e.g. one head's).

    Raises:
        ArtifactMismatchError: a file is missing or differs, or none matches `prefix`.
    """
    files = {k: v for k, v in manifest.files.items() if k.startswith(prefix)}
    if not files:
        raise ArtifactMismatchError(f"the manifest lists no files under {prefix!r}")
    for rel, expected in files.items():
        path = directory / rel
        if not path.is_file():
            raise ArtifactMismatchError(f"{path} listed in the manifest is missing")
        actual = sha256_file(path)
        if actual != expected:
            raise ArtifactMismatchError(
                f"{path}: sha256 {actual} != manifest {expected}"
            )


def check_encoder(manifest: Manifest, info: EncoderInfo, policy: str) -> None:
    """Refuse to score with an encoder or policy other than the one trained on.

    Raises:
        ArtifactMismatchError: encoder id, weights hash, dimension or policy differ.
    """
    rec = manifest.encoder
    got = (info.encoder_id, info.weights_sha256, info.layout, info.token, policy)
    want = (rec.id, rec.sha256, rec.layout.image_layout, rec.token, rec.policy)
    if got != want:
        raise ArtifactMismatchError(
            f"artifacts were trained on encoder/policy {want}, running {got}"
        )


def check_text_tower(manifest: Manifest, info: EncoderInfo | None) -> None:
    """Refuse to encode text with a tower other than the one trained on.

    Args:
        manifest: The artifact manifest.
        info: Identity of the text encoder in use (None: there is none).

    Raises:
        ArtifactMismatchError: The artifact has a text source and `info` is absent,
            has no text tower, or is another model or width.
    """
    rec = manifest.encoder
    if rec.text_tower is None:
        return
    want = (rec.text_tower.id, rec.text_tower.sha256, rec.text_dim)
    got = (
        None if info is None else (info.encoder_id, info.weights_sha256, info.text_dim)
    )
    if got != want:
        raise ArtifactMismatchError(
            f"artifacts read text source {rec.text_source!r} through text tower "
            f"{want}; running {got} (set SYNTHGUARD_HF_CLIP_DIR to that CLIP directory)"
        )


def load_artifacts(
    directory: Path, encoder: EncoderInfo | None = None, policy: str | None = None
) -> Artifacts:
    """Load and verify artifacts written by `write_artifacts`.

    Args:
        directory: Artifact directory.
        encoder: When given, also check it matches the manifest (with `policy`).
        policy: Versioned preprocessing policy id in use (e.g. ``clip_default@1``).

    Raises:
        MissingWeightsError: no manifest.
        ArtifactMismatchError: hash, encoder, dimension or format mismatch.
    """
    manifest = read_manifest(directory)
    verify_files(directory, manifest)
    if encoder is not None:
        check_encoder(manifest, encoder, policy or manifest.encoder.policy)
    heads = {name: _load_head(directory, manifest, name) for name in manifest.heads}
    calibrations = {
        name: Calibration.from_dict(rec.calibration)
        for name, rec in manifest.heads.items()
    }
    return Artifacts(
        directory,
        manifest,
        heads,
        calibrations,
        manifest.decision(),
        manifest.novelty_rule(),
    )


def _load_head(directory: Path, manifest: Manifest, name: str) -> Head:
    rec = manifest.heads[name]
    cls = HEAD_KINDS.get(rec.kind)
    if cls is None:
        raise ArtifactMismatchError(f"unknown head kind {rec.kind!r} in {directory}")
    return cls.load(directory / "heads" / name, rec.params)


def load_head(directory: Path, name: str) -> tuple[Manifest, Head]:
    """Load and verify one head instance (what a Triton head model serves).

    Args:
        directory: An artifact directory (or a model version dir holding a copy of
            the manifest and this head's files).
        name: Head instance name in the manifest.

    Raises:
        MissingWeightsError: no manifest.
        ArtifactMismatchError: no such head, or its files are missing or altered.
    """
    manifest = read_manifest(directory)
    if name not in manifest.heads:
        raise ArtifactMismatchError(f"head {name!r} not in the manifest of {directory}")
    verify_files(directory, manifest, f"heads/{name}/")
    return manifest, _load_head(directory, manifest, name)


def manifest_summary(manifest: Manifest) -> dict[str, Any]:
    """A short JSON-able summary (for CLI output and verdicts)."""
    return {
        "encoder": manifest.encoder.id,
        "encoder_sha256": manifest.encoder.sha256,
        "cls_token": manifest.encoder.token,
        "policy": manifest.encoder.policy,
        "decision_head": manifest.decision_head,
        "heads": {n: r.kind for n, r in manifest.heads.items()},
        "synthguard_version": manifest.synthguard_version,
        "created_utc": manifest.created_utc,
        # only with a text branch: image-only summaries stay as they were
        **(
            {"text_source": str(text)}
            if (text := manifest.encoder.text).enabled
            else {}
        ),
    }


def dumps(obj: Any) -> str:
    """JSON with sorted keys, for stable CLI output."""
    return json.dumps(obj, indent=2, sort_keys=True, default=str)
