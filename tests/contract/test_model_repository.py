"""The committed and the exported Triton repository against `serving.triton.names` and the manifest.

Hermetic: heads are fitted on synthetic 16-d features and the "encoder" is a dummy
file whose sha256 the manifest records, so no CLIP weights or Triton are needed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np
import pytest
from fakes import fake_info, synthetic_features
from triton_fixtures import backend_args

from serving.artifacts import EncoderRecord, load_artifacts, write_artifacts
from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.hashing import sha256_file
from serving.references import fit_references, knn_head
from serving.scoring.calibration import calibrate, decide
from serving.scoring.fusion import FUSION
from serving.scoring.novelty import apply_reasons, novelty_reasons
from serving.triton import names
from serving.triton.backend import DetectorPipeline, HeadBackend
from serving.triton.configs import (
    config_files,
    expected_table,
    get_parameter,
    read_config,
    tensor_table,
)
from serving.triton.export import SOURCE_ROOT, TEMPLATE_DIR, export_repository
from serving.workflows import HeadOptions, calibrate_heads, fit_decision, fit_heads

HEADS = ("knn_k1", "knn_k3", "linear_probe", "mlp", "rine")
DIM = 16
LAYOUT = fake_info(DIM).layout
MAX_SHIM_LINES = 60


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, dummy_encoder: Path) -> Path:
    fs = synthetic_features(n_per_class=20, embed_dim=DIM)
    opts = HeadOptions(
        mlp_epochs=2,
        mlp_batch_size=32,
        target_fpr=0.1,
        uncertain_fpr=0.3,
        rine_epochs=2,
    )
    heads = fit_heads(fs, HEADS, opts)
    cals = calibrate_heads(
        heads, synthetic_features(n_per_class=10, embed_dim=DIM, seed=1), opts
    )
    out = tmp_path_factory.mktemp("artifacts")
    record = EncoderRecord(
        id="dummy",
        sha256=sha256_file(dummy_encoder),
        embed_dim=DIM,
        policy="clip_default@1",
        n_blocks=LAYOUT.n_blocks,
        block_dim=LAYOUT.block_dim,
        token="ln_2",
    )
    write_artifacts(out, record, heads, cals, "knn_k3", {"test": True})
    return out


@pytest.fixture(scope="module")
def exported(
    tmp_path_factory: pytest.TempPathFactory, artifacts: Path, dummy_encoder: Path
) -> Path:
    out = tmp_path_factory.mktemp("export") / "repo"
    export_repository(artifacts, out, encoder_onnx=dummy_encoder)
    return out


def test_committed_repository_has_every_model_and_a_thin_shim() -> None:
    assert {p.name for p in TEMPLATE_DIR.iterdir() if p.is_dir()} == set(
        names.TEMPLATE_MODELS
    )
    for model in names.TEMPLATE_MODELS:
        shim = TEMPLATE_DIR / model / names.VERSION / "model.py"
        assert len(shim.read_text().splitlines()) <= MAX_SHIM_LINES, shim


def test_committed_repository_holds_no_weights() -> None:
    files = [
        p
        for p in TEMPLATE_DIR.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    ]
    assert {p.name for p in files if p.suffix != ".pbtxt"} == {"model.py"}


@pytest.mark.parametrize(
    "path", config_files(TEMPLATE_DIR), ids=lambda p: str(p.relative_to(TEMPLATE_DIR))
)
def test_committed_config_matches_names(path: Path) -> None:
    config = read_config(path)
    model_dir = path.parent.parent if path.parent.name == "configs" else path.parent
    assert config.name == model_dir.name
    assert config.max_batch_size > 0
    expected = expected_table(config.name, names.DEFAULT_LAYOUT, names.DEFAULT_KNN_K)
    assert tensor_table(config) == expected


def test_committed_optional_inputs_are_marked_optional() -> None:
    for model in names.TEMPLATE_MODELS:
        config = read_config(TEMPLATE_DIR / model / "config.pbtxt")
        optional = {t.name for t in config.input if t.optional}
        assert optional == set(names.OPTIONAL_INPUTS.get(model, ())), model


@pytest.mark.parametrize("model", names.TEMPLATE_MODELS)
def test_default_configs_run_python_on_cpu_with_dynamic_batching(model: str) -> None:
    config = read_config(TEMPLATE_DIR / model / "config.pbtxt")
    assert config.backend == "python"
    assert config.max_batch_size == names.MAX_BATCH_SIZE
    assert [g.kind for g in config.instance_group] == [
        config.instance_group[0].KIND_CPU
    ]
    assert config.HasField("dynamic_batching")


def test_encoder_variants_no_batching_and_gpu_tensorrt_fp16() -> None:
    configs = TEMPLATE_DIR / names.ENCODER_MODEL / "configs"
    plain = read_config(configs / "no_batching.pbtxt")
    assert plain.backend == "python"
    assert not plain.HasField("dynamic_batching")
    gpu = read_config(configs / "gpu.pbtxt")
    assert gpu.platform == "onnxruntime_onnx"
    assert gpu.default_model_filename == names.ENCODER_GPU_FILE
    assert gpu.instance_group[0].kind == gpu.instance_group[0].KIND_GPU
    (trt,) = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert (trt.name, trt.parameters["precision_mode"]) == ("tensorrt", "FP16")


def test_exported_configs_match_names_and_manifest(
    exported: Path, artifacts: Path
) -> None:
    manifest = load_artifacts(artifacts).manifest
    k = int(manifest.heads["knn_k3"].params["k"])
    for path in config_files(exported):
        config = read_config(path)
        assert tensor_table(config) == expected_table(
            config.name, manifest.encoder.layout, k
        ), path
        assert get_parameter(config, names.PARAM_PYTHONPATH) == str(SOURCE_ROOT)


def test_exported_parameters_name_the_served_heads_and_thresholds(
    exported: Path, artifacts: Path
) -> None:
    manifest = load_artifacts(artifacts).manifest
    served = {
        "knn": "knn_k3",
        "linear_probe": "linear_probe",
        "mlp": "mlp",
        "rine": "rine",
    }  # knn_k3 decides
    for kind, model in names.HEAD_MODELS.items():
        assert (
            get_parameter(
                read_config(exported / model / "config.pbtxt"), names.PARAM_HEAD
            )
            == served[kind]
        )
    pipeline = read_config(exported / names.PIPELINE_MODEL / "config.pbtxt")
    cal = manifest.heads[manifest.decision_head].calibration
    assert json.loads(get_parameter(pipeline, names.PARAM_HEADS) or "") == served
    assert (
        float(get_parameter(pipeline, names.PARAM_THRESHOLD) or "nan")
        == cal["threshold"]
    )
    assert (
        float(get_parameter(pipeline, names.PARAM_UNCERTAIN_LOW) or "nan")
        == cal["uncertain_low"]
    )


def test_export_manifest_hashes_every_file(exported: Path) -> None:
    doc = json.loads((exported / names.EXPORT_MANIFEST_FILE).read_text())
    files = {str(p.relative_to(exported)) for p in exported.rglob("*") if p.is_file()}
    assert set(doc["files"]) == files - {names.EXPORT_MANIFEST_FILE}
    assert all(sha256_file(exported / rel) == sha for rel, sha in doc["files"].items())
    assert (
        exported / names.ENCODER_MODEL / names.VERSION / names.ENCODER_CPU_FILE
    ).is_file()
    # image-only artifacts: no text encoder model, an image-only MLP
    assert not (exported / names.TEXT_ENCODER_MODEL).exists()


def test_export_rejects_an_encoder_the_heads_were_not_trained_on(
    artifacts: Path, tmp_path: Path
) -> None:
    other = tmp_path / "other.onnx"
    other.write_bytes(b"another model")
    with pytest.raises(ArtifactMismatchError, match="sha256"):
        export_repository(artifacts, tmp_path / "repo", encoder_onnx=other)


def test_export_refuses_to_replace_a_foreign_directory(
    artifacts: Path, dummy_encoder: Path, tmp_path: Path
) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(InvalidInputError, match="refusing"):
        export_repository(artifacts, tmp_path, encoder_onnx=dummy_encoder)
    assert (tmp_path / "precious.txt").exists()


def test_served_heads_score_like_the_trained_heads(
    exported: Path, artifacts: Path
) -> None:
    arts = load_artifacts(artifacts)
    x = synthetic_features(n_per_class=3, embed_dim=DIM, seed=2).x
    for kind, model in names.HEAD_MODELS.items():
        instance = "knn_k3" if kind == "knn" else kind
        out = HeadBackend.from_args(backend_args(exported, model)).run(_encoded(x))
        np.testing.assert_allclose(
            out[names.SCORE.name][:, 0], arts.heads[instance].score(x), atol=1e-6
        )
    knn = HeadBackend.from_args(backend_args(exported, names.HEAD_MODELS["knn"])).run(
        _encoded(x)
    )
    assert knn[names.EXEMPLARS.name].shape == (len(x), 6)


def test_pipeline_splits_batched_requests_back_in_order(
    exported: Path, artifacts: Path
) -> None:
    arts = load_artifacts(artifacts)
    x = synthetic_features(n_per_class=3, embed_dim=DIM, seed=3).x[:5]
    heads = {
        m: HeadBackend.from_args(backend_args(exported, m))
        for m in names.HEAD_MODELS.values()
    }

    async def infer(model: str, inputs: dict, outputs: tuple[str, ...]) -> dict:
        if model == names.ENCODER_MODEL:  # the "image" is just a row index here
            return _encoded(x[inputs[names.IMAGE.name][:, 0, 0, 0]])
        return heads[model].run(inputs)

    pipeline = DetectorPipeline.from_args(backend_args(exported, names.PIPELINE_MODEL))
    images = np.zeros((5, 224, 224, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(5)
    batches = [{names.IMAGE.name: images[:2]}, {names.IMAGE.name: images[2:]}]
    out = asyncio.run(pipeline.run_batch(batches, infer))
    cal = arts.calibrations["knn_k3"]
    probs = calibrate(cal, arts.heads["knn_k3"].score(x))
    got = np.concatenate([o[names.PROBABILITY.name][:, 0] for o in out])
    np.testing.assert_allclose(got, probs, atol=1e-6)
    labels = [b.decode() for o in out for b in o[names.LABEL.name][:, 0]]
    assert labels == list(decide(cal, probs))
    assert [len(o[names.EMBEDDING.name]) for o in out] == [2, 3]


def _encoded(x: np.ndarray) -> dict[str, np.ndarray]:
    """The encoder model's two outputs for flat feature rows."""
    return {
        names.EMBEDDING.name: LAYOUT.embeds(x),
        names.CLS_TOKENS.name: LAYOUT.blocks(x),
    }


def test_pipeline_applies_a_fused_decision_like_in_process(tmp_path: Path) -> None:
    fs = synthetic_features(n_per_class=20, embed_dim=DIM)
    cal = synthetic_features(n_per_class=10, embed_dim=DIM, seed=1)
    opts = HeadOptions(mlp_epochs=2, rine_epochs=2, target_fpr=0.1, uncertain_fpr=0.3)
    heads = fit_heads(fs, ("knn_k3", "linear_probe", "mlp", "rine"), opts)
    rule = fit_decision(FUSION, heads, cal, opts)
    dummy = tmp_path / "encoder.onnx"
    dummy.write_bytes(b"not really onnx")
    record = EncoderRecord(
        id="dummy",
        sha256=sha256_file(dummy),
        embed_dim=DIM,
        policy="clip_default@1",
        n_blocks=LAYOUT.n_blocks,
        block_dim=LAYOUT.block_dim,
        token="ln_2",
    )
    cals = calibrate_heads(heads, cal, opts)
    refs = fit_references(heads, cal.x, rule)
    write_artifacts(tmp_path / "arts", record, heads, cals, rule, {}, refs)
    repo = tmp_path / "repo"
    export_repository(tmp_path / "arts", repo, encoder_onnx=dummy)
    arts = load_artifacts(tmp_path / "arts")
    assert arts.decision.fusion is not None
    assert set(arts.decision.members) == set(heads)
    x = synthetic_features(n_per_class=3, embed_dim=DIM, seed=4).x
    x = np.concatenate([x, -x[:2]])  # the last two are far from both banks: novel
    backends = {
        m: HeadBackend.from_args(backend_args(repo, m))
        for m in names.HEAD_MODELS.values()
    }

    async def infer(model: str, inputs: dict, outputs: tuple[str, ...]) -> dict:
        if model == names.ENCODER_MODEL:
            return _encoded(x[inputs[names.IMAGE.name][:, 0, 0, 0]])
        return backends[model].run(inputs)

    pipeline = DetectorPipeline.from_args(backend_args(repo, names.PIPELINE_MODEL))
    images = np.zeros((len(x), 224, 224, 3), np.uint8)
    images[:, 0, 0, 0] = np.arange(len(x))
    out = asyncio.run(pipeline.run({names.IMAGE.name: images}, infer))
    per_head = {n: h.score(x) for n, h in arts.heads.items()}
    want = calibrate(arts.decision.calibration, arts.decision.score(per_head))
    np.testing.assert_allclose(out[names.PROBABILITY.name][:, 0], want, atol=1e-6)
    knn = knn_head(arts.heads)
    assert knn is not None
    reasons = novelty_reasons(arts.novelty, knn.bank_similarity(x))
    labels = apply_reasons(decide(arts.decision.calibration, want), reasons)
    assert reasons[-2:] == [("novel",), ("novel",)]
    assert [b.decode() for b in out[names.LABEL.name][:, 0]] == list(labels)
    got = [b.decode() for b in out[names.REASONS.name][:, 0]]
    assert got == [",".join(r) for r in reasons]
