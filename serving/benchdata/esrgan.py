"""Adapter: the ESRGAN-slim 2x super-resolution generator of UpscalerJS, run in torch.

The npm package ``@upscalerjs/default-model@1.0.0`` (MIT) ships a TensorFlow.js
layers model: ``model.json`` (Keras functional topology and weightsManifest) and
float32 shards. We rebuild the Keras graph in torch (only the layer classes it uses),
load every weight exactly once (HWIO kernels become OIHW) and run it on the CPU in
float32 on pixel values in [0, 255], as UpscalerJS does for the ``rdn`` architecture.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import operator
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image
from torch import nn

from serving.errors import ArtifactMismatchError, InvalidInputError, MissingWeightsError

MODEL_ID: Final = "upscalerjs-default-model@1.0.0 (ESRGAN-slim x2)"
NPM_SPEC: Final = "@upscalerjs/default-model@1.0.0"
MODEL_RELDIR: Final = Path(".cache/assets/upscalerjs-default-model/package/models")
WEIGHTS_SHA256 = "5cb464ae4d390ce0a771afd5feaf60fbfcdb18ab48a56db98cdf6b88202369de"
SCALE: Final = 2
VALUE_MAX: Final = 255.0
_REPO_ROOT: Final = Path(__file__).resolve().parents[2]
_GET_HINT: Final = (
    f"get it with `npm pack {NPM_SPEC}`, then `tar xzf` the .tgz into "
    ".cache/assets/upscalerjs-default-model/ of the repo (or run `make setup`)"
)

Tensors = list[torch.Tensor]
Weights = dict[str, npt.NDArray[np.float32]]


class UnsupportedModelError(InvalidInputError):
    """The model file uses a layer class, option or weight format not implemented."""


def find_esrgan_model(root: Path | None = None) -> Path:
    """Locate the directory holding the UpscalerJS ``model.json`` and its shards.

    Args:
        root: explicit location (the ``models`` dir, the unpacked ``package`` dir or
            the directory it was unpacked into); default
            ``<repo>/.cache/assets/upscalerjs-default-model/package/models``.

    Returns:
        The directory containing ``model.json``.

    Raises:
        MissingWeightsError: if no ``model.json`` is found; names the paths looked for.
    """
    if root is None:
        candidates = [_REPO_ROOT / MODEL_RELDIR]
    else:
        candidates = [root, root / "models", root / "package" / "models"]
    for cand in candidates:
        if (cand / "model.json").is_file():
            return cand
    looked = ", ".join(str(c / "model.json") for c in candidates)
    raise MissingWeightsError(f"ESRGAN model not found at {looked}; {_GET_HINT}")


def read_weights(model_dir: Path, manifest: list[Any]) -> tuple[Weights, str]:
    """Read the float32 weights listed in a tfjs weightsManifest.

    Returns:
        Arrays by weight name, and the sha256 of the concatenated shard bytes (for
        a single shard, the sha256 of the ``.bin`` file).

    Raises:
        MissingWeightsError: if a shard file is absent.
        UnsupportedModelError: if a weight is quantised or not float32.
        ArtifactMismatchError: if shard sizes disagree with it or a name repeats.
    """
    weights: Weights = {}
    digest = hashlib.sha256()
    for group in manifest:
        paths = [model_dir / rel for rel in group["paths"]]
        if missing := [str(p) for p in paths if not p.is_file()]:
            raise MissingWeightsError(f"{missing} absent; {_GET_HINT}")
        blob = b"".join(p.read_bytes() for p in paths)
        digest.update(blob)
        offset = 0
        for spec in group["weights"]:
            name, count = spec["name"], math.prod(spec["shape"])
            if spec.get("dtype") != "float32" or "quantization" in spec:
                raise UnsupportedModelError(f"weight {name!r}: only plain float32")
            if name in weights or offset + 4 * count > len(blob):
                raise ArtifactMismatchError(f"weight {name!r} repeated or truncated")
            arr = np.frombuffer(blob, dtype="<f4", count=count, offset=offset)
            weights[name] = arr.reshape(spec["shape"]).astype(np.float32)
            offset += 4 * count
        if offset != len(blob):
            raise ArtifactMismatchError(f"unread bytes in {group['paths']}")
    return weights, digest.hexdigest()


class _WeightPool:
    """Hands out each weight once, so that leftovers and gaps are both detected."""

    def __init__(self, weights: Weights) -> None:
        self._left = dict(weights)

    def take(self, name: str, shape: tuple[int, ...] | None = None) -> torch.Tensor:
        if name not in self._left:
            raise ArtifactMismatchError(f"weight {name!r} needed but missing")
        arr = self._left.pop(name)
        if shape is not None and tuple(arr.shape) != shape:
            raise ArtifactMismatchError(f"{name!r}: shape {arr.shape} != {shape}")
        return torch.from_numpy(arr)

    def ensure_empty(self) -> None:
        if self._left:
            raise ArtifactMismatchError(f"weights never used: {sorted(self._left)}")


_ACTIVATIONS: Final[dict[str, Callable[[torch.Tensor], torch.Tensor]]] = {
    "linear": lambda x: x,
    "relu": torch.relu,
}


def _activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in _ACTIVATIONS:
        raise UnsupportedModelError(f"activation {name!r} not in {list(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _same_pad(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """Pad like TensorFlow ``same``: an odd extra pixel goes after, not before."""
    pads: list[int] = []
    for axis in (1, 0):  # F.pad lists the last dim (width) first
        size, k = x.shape[2 + axis], conv.kernel_size[axis]
        stride, dil = conv.stride[axis], conv.dilation[axis]
        span = (math.ceil(size / stride) - 1) * stride + (k - 1) * dil + 1
        total = max(span - size, 0)
        pads += [total // 2, total - total // 2]
    return nn.functional.pad(x, pads)


class _Conv2D(nn.Module):
    def __init__(self, cfg: Mapping[str, Any], pool: _WeightPool) -> None:
        super().__init__()
        name, padding = cfg["name"], cfg["padding"]
        if cfg["data_format"] != "channels_last" or padding not in ("same", "valid"):
            raise UnsupportedModelError(f"Conv2D {name}: {padding=}, data_format")
        kh, kw = cfg["kernel_size"]
        groups, filters = int(cfg.get("groups", 1)), int(cfg["filters"])
        kernel = pool.take(f"{name}/kernel")
        if tuple(kernel.shape[:2]) != (kh, kw) or kernel.shape[3] != filters:
            raise ArtifactMismatchError(f"{name}/kernel shape {tuple(kernel.shape)}")
        self.conv = nn.Conv2d(
            int(kernel.shape[2]) * groups, filters, (kh, kw), tuple(cfg["strides"]),
            padding=0, dilation=tuple(cfg["dilation_rate"]), groups=groups,
            bias=bool(cfg["use_bias"]),
        )  # fmt: skip
        with torch.no_grad():
            self.conv.weight.copy_(kernel.permute(3, 2, 0, 1))  # HWIO -> OIHW
            if self.conv.bias is not None:
                self.conv.bias.copy_(pool.take(f"{name}/bias", (filters,)))
        self.same = padding == "same"
        self.act = _activation(cfg["activation"])

    def forward(self, xs: Tensors) -> torch.Tensor:
        (x,) = xs
        if self.same:
            x = _same_pad(x, self.conv)
        return self.act(self.conv(x))


class _Op(nn.Module):
    """A weightless layer: a plain function of its input tensors."""

    def __init__(self, fn: Callable[[Tensors], torch.Tensor]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, xs: Tensors) -> torch.Tensor:
        return self.fn(xs)


def _weightless(cls: str, cfg: Mapping[str, Any]) -> Callable[[Tensors], torch.Tensor]:
    """Return the parameter-free Keras layer ``cls`` as a function of its inputs."""
    if cls == "Activation":
        act = _activation(cfg["activation"])
        return lambda xs: act(xs[0])
    if cls == "Add":
        return lambda xs: functools.reduce(operator.add, xs)
    if cls == "Concatenate" and cfg["axis"] in (-1, 3):
        return lambda xs: torch.cat(xs, dim=1)  # NHWC axis 3 == NCHW dim 1
    if cls == "UpSampling2D" and cfg["interpolation"] == "nearest":
        sh, sw = (int(v) for v in cfg["size"])
        return lambda xs: xs[0].repeat_interleave(sh, 2).repeat_interleave(sw, 3)
    raise UnsupportedModelError(f"layer {cfg['name']}: class {cls!r} or its options")


def _inbound_names(layer: Mapping[str, Any]) -> list[str]:
    nodes = layer["inbound_nodes"]
    if len(nodes) != 1 or any(ref[1:3] != [0, 0] or ref[3] for ref in nodes[0]):
        raise UnsupportedModelError(f"layer {layer['name']}: shared layers or kwargs")
    return [str(ref[0]) for ref in nodes[0]]


class KerasGraph(nn.Module):
    """A single-input, single-output Keras functional graph, NCHW in and out."""

    def __init__(self, topology: Mapping[str, Any], weights: Weights) -> None:
        """Build the layers and consume ``weights``, every one exactly once.

        Raises:
            UnsupportedModelError: on an unknown layer class, option or graph shape.
            ArtifactMismatchError: on a missing, misshapen or unused weight.
        """
        super().__init__()
        cfg = topology["model_config"]["config"]
        if len(cfg["input_layers"]) != 1 or len(cfg["output_layers"]) != 1:
            raise UnsupportedModelError("only single-input single-output models")
        self.input_name = str(cfg["input_layers"][0][0])
        self.output_name = str(cfg["output_layers"][0][0])
        self.ops = nn.ModuleDict()
        self.edges: list[tuple[str, list[str]]] = []
        pool = _WeightPool(weights)
        for layer in cfg["layers"]:
            cls = layer["class_name"]
            if cls == "InputLayer":
                continue
            conf = layer["config"]
            op = _Conv2D(conf, pool) if cls == "Conv2D" else _Op(_weightless(cls, conf))
            self.ops[layer["name"]] = op
            self.edges.append((layer["name"], _inbound_names(layer)))
        pool.ensure_empty()
        self.layer_classes = sorted({str(x["class_name"]) for x in cfg["layers"]})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Run the layers in file order (Keras saves them topologically sorted)."""
        values = {self.input_name: x}
        for name, inputs in self.edges:
            values[name] = self.ops[name]([values[i] for i in inputs])
        return values[self.output_name]


class EsrganX2:
    """UpscalerJS ESRGAN-slim (RDN C1-D2-G4-G064, DIV2K) 2x upscaler on the CPU."""

    model_id: Final = MODEL_ID
    scale: Final = SCALE

    def __init__(
        self, model_dir: Path | None = None, *, sha256: str | None = WEIGHTS_SHA256
    ) -> None:
        """Load the model found by :func:`find_esrgan_model`.

        Args:
            model_dir: explicit location; see :func:`find_esrgan_model`.
            sha256: pinned sha256 of the weights; ``None`` skips the check.

        Raises:
            MissingWeightsError: if the model files are absent.
            ArtifactMismatchError: if the weights differ from the pin or the graph.
        """
        self.model_dir = find_esrgan_model(model_dir)
        spec = json.loads((self.model_dir / "model.json").read_text(encoding="utf-8"))
        weights, self._sha256 = read_weights(self.model_dir, spec["weightsManifest"])
        if sha256 is not None and self._sha256 != sha256:
            msg = f"{self.model_dir}: weights sha256 {self._sha256} != {sha256}"
            raise ArtifactMismatchError(f"{msg}; {_GET_HINT}")
        self.weight_names = sorted(weights)
        self.net = KerasGraph(spec["modelTopology"], weights).eval()

    @property
    def weights_sha256(self) -> str:
        """Sha256 of the weight shard (``group1-shard1of1.bin``)."""
        return self._sha256

    def upscale(self, img: Image.Image) -> Image.Image:
        """Return ``img`` upscaled exactly 2x by the network.

        Raises:
            InvalidInputError: if ``img`` is not a non-empty RGB image.
        """
        if img.mode != "RGB" or img.width == 0 or img.height == 0:
            raise InvalidInputError(f"need non-empty RGB, got {img.mode} {img.size}")
        x = torch.from_numpy(np.asarray(img, dtype=np.float32)).permute(2, 0, 1)[None]
        with torch.no_grad():
            y = self.net(x)[0].clamp(0.0, VALUE_MAX).round()
        arr = y.permute(1, 2, 0).to(torch.uint8).contiguous().numpy()
        return Image.fromarray(arr)
