"""Adapter: read, check and rewrite Triton ``config.pbtxt`` files as protobuf messages.

Parsing goes through ``tritonclient.grpc.model_config_pb2.ModelConfig`` (the server's
own schema), so a config that parses here has no unknown fields or bad enums.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from serving.errors import ArtifactMismatchError
from serving.scoring.views import FeatureLayout
from serving.triton import names

ModelConfig = Any  # model_config_pb2.ModelConfig; tritonclient ships no type hints


def read_config(path: Path) -> ModelConfig:
    """Parse one ``config.pbtxt``.

    Raises:
        ArtifactMismatchError: the text is not a valid ModelConfig.
    """
    try:
        return text_format.Parse(
            path.read_text(encoding="utf-8"), model_config_pb2.ModelConfig()
        )
    except text_format.ParseError as exc:
        raise ArtifactMismatchError(f"{path}: {exc}") from exc


def write_config(path: Path, config: ModelConfig, header: str = "") -> None:
    """Write a ModelConfig as text, after optional ``#`` comment lines."""
    comment = "".join(f"# {line}\n" for line in header.splitlines())
    path.write_text(comment + text_format.MessageToString(config), encoding="utf-8")


def config_files(repo: Path) -> list[Path]:
    """Every ``config.pbtxt`` and ``configs/*.pbtxt`` under a repository, sorted."""
    return sorted([*repo.glob("*/config.pbtxt"), *repo.glob("*/configs/*.pbtxt")])


def tensor_table(config: ModelConfig) -> dict[str, tuple[str, tuple[int, ...]]]:
    """``{tensor name: (config dtype, dims)}`` for every input and output."""
    return {
        t.name: (model_config_pb2.DataType.Name(t.data_type), tuple(t.dims))
        for t in (*config.input, *config.output)
    }


def expected_table(
    model: str, layout: FeatureLayout, knn_k: int
) -> dict[str, tuple[str, tuple[int, ...]]]:
    """What `tensor_table` must return for `model`, per `serving.triton.names`.

    A layout with a text part adds the model's `names.TEXT_INPUTS`.
    """
    inputs, outputs = names.model_io(model, layout.text_dim > 0)
    return {
        s.name: (s.config_dtype, names.resolve_dims(s, layout, knn_k))
        for s in (*inputs, *outputs)
    }


def fill_dims(config: ModelConfig, layout: FeatureLayout, knn_k: int) -> None:
    """Set every input/output's dims from `names` for these artifact dimensions.

    Raises:
        ArtifactMismatchError: the config is of an unknown model or has a tensor
            `names` does not define.
    """
    if config.name not in names.MODEL_IO:
        raise ArtifactMismatchError(f"unknown model {config.name!r}")
    inputs, outputs = names.model_io(config.name, layout.text_dim > 0)
    specs = {s.name: s for s in (*inputs, *outputs)}
    for tensor in (*config.input, *config.output):
        if tensor.name not in specs:
            raise ArtifactMismatchError(
                f"{config.name}: unknown tensor {tensor.name!r}"
            )
        del tensor.dims[:]
        tensor.dims.extend(names.resolve_dims(specs[tensor.name], layout, knn_k))


def set_parameter(config: ModelConfig, key: str, value: str) -> None:
    """Set a string parameter (``parameters { key: ... value: { string_value } }``)."""
    config.parameters[key].string_value = value


def get_parameter(config: ModelConfig, key: str) -> str | None:
    """A string parameter, or None when absent."""
    if key not in config.parameters:
        return None
    return str(config.parameters[key].string_value)


def add_text_inputs(config: ModelConfig) -> None:
    """Add the model's `names.TEXT_INPUTS` (artifacts with a text source).

    Dims are left to `fill_dims`.
    """
    present = {t.name for t in config.input}
    for spec in names.TEXT_INPUTS.get(config.name, ()):
        if spec.name not in present:
            tensor = config.input.add()
            tensor.name = spec.name
            tensor.data_type = model_config_pb2.DataType.Value(spec.config_dtype)
