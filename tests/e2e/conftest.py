"""Session fixtures for the stream end-to-end tests: the REAL Tansu broker and the
REAL tritonserver serving tiny heads trained on real CLIP features."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from triton_fixtures import (
    export,
    fake_images,
    missing_installs,
    photo_images,
    train_artifacts,
)

from serving.triton.server import ServerOptions, TritonServer
from stream.dev.broker import TansuBroker


@pytest.fixture(scope="session")
def broker() -> Iterator[TansuBroker]:
    with TansuBroker() as b:
        yield b


@pytest.fixture(scope="session")
def images_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """JPEG files: ``real_<i>.jpg`` photos and ``fake_<i>.jpg`` conv-net outputs."""
    reason = missing_installs()
    if reason:
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("images")
    reals = photo_images()
    for i, img in enumerate(reals):
        img.save(out / f"real_{i:02d}.jpg", quality=90)
    for i, img in enumerate(fake_images(reals)):
        img.save(out / f"fake_{i:02d}.jpg", quality=90)
    return out


@pytest.fixture(scope="session")
def artifacts(tmp_path_factory: pytest.TempPathFactory, images_dir: Path) -> Path:
    from PIL import Image

    from serving.encoders.onnx_clip import OnnxClipEncoder

    reals = [Image.open(p).convert("RGB") for p in sorted(images_dir.glob("real_*"))]
    fakes = [Image.open(p).convert("RGB") for p in sorted(images_dir.glob("fake_*"))]
    return train_artifacts(
        tmp_path_factory.mktemp("artifacts"), OnnxClipEncoder(threads=2), reals, fakes
    )


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory, artifacts: Path) -> Path:
    return export(artifacts, tmp_path_factory.mktemp("repo") / "model_repository")


@pytest.fixture(scope="session")
def triton(
    model_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TritonServer]:
    with TritonServer(
        model_repo, ServerOptions(), work_dir=tmp_path_factory.mktemp("triton")
    ) as srv:
        yield srv
