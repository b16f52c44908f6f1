from pathlib import Path

import pytest
from fakes import FakeEncoder, synthetic_features

from serving.artifacts import EncoderRecord, load_artifacts, write_artifacts
from serving.encoders.base import EncoderInfo
from serving.errors import ArtifactMismatchError, MissingWeightsError
from serving.workflows import HeadOptions, calibrate_heads, fit_heads

FAST = HeadOptions(mlp_epochs=2, mlp_batch_size=32)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    train, cal = synthetic_features(seed=0), synthetic_features(seed=1)
    heads = fit_heads(train, ("knn_k1", "linear_probe", "mlp"), FAST)
    cals = calibrate_heads(heads, cal, FAST)
    out = tmp_path_factory.mktemp("artifacts")
    record = EncoderRecord.from_info(FakeEncoder().info, "clip_default@1")
    write_artifacts(out, record, heads, cals, "linear_probe", {"n_train": 240})
    return out


def test_artifacts_round_trip_scores_identically(saved: Path) -> None:
    arts = load_artifacts(saved, FakeEncoder().info, "clip_default@1")
    x = synthetic_features(seed=3).x
    again = load_artifacts(saved)
    for name, head in arts.heads.items():
        assert (head.score(x) == again.heads[name].score(x)).all()
    assert arts.manifest.decision_head == "linear_probe"
    assert arts.manifest.heads["knn_k1"].params["k"] == 1


def test_manifest_hashes_every_file(saved: Path) -> None:
    arts = load_artifacts(saved)
    on_disk = {
        str(p.relative_to(saved)) for p in (saved / "heads").rglob("*") if p.is_file()
    }
    assert set(arts.manifest.files) == on_disk


def test_tampered_file_is_refused(saved: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "a"
    shutil.copytree(saved, copy)
    target = next((copy / "heads" / "linear_probe").iterdir())
    target.write_bytes(target.read_bytes() + b"x")
    with pytest.raises(ArtifactMismatchError, match="sha256"):
        load_artifacts(copy)


def test_other_encoder_is_refused(saved: Path) -> None:
    other = EncoderInfo("fake-encoder", "1" * 64, 16)
    with pytest.raises(ArtifactMismatchError, match="trained on encoder"):
        load_artifacts(saved, other, "clip_default@1")


def test_missing_manifest_says_how_to_train(tmp_path: Path) -> None:
    with pytest.raises(MissingWeightsError, match="synthguard train"):
        load_artifacts(tmp_path)
