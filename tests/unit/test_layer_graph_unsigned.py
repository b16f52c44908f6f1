"""`unsigned_weights`: int8 MatMulInteger weights stored as uint8 give exact products.

Onnxruntime's u8·s8 kernel on x86 CPUs without VNNI adds pairs of products in int16
and saturates; the inputs below (255 · 127 + 255 · 127 > 32767) would trip it. The
rewritten graph must equal numpy's exact integer product on every CPU.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from serving.encoders.layer_graph import unsigned_weights
from serving.errors import ArtifactMismatchError


def _graph(b: npt.NDArray[np.generic], zb: npt.NDArray[np.generic]) -> onnx.ModelProto:
    node = helper.make_node("MatMulInteger", ["a", "b", "za", "zb"], ["y"])
    graph = helper.make_graph(
        [node],
        "mmi",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [None, b.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [None, b.shape[1]])],
        initializer=[
            numpy_helper.from_array(b, "b"),
            numpy_helper.from_array(np.array(3, np.uint8), "za"),
            numpy_helper.from_array(zb, "zb"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def _run(model: onnx.ModelProto, a: npt.NDArray[np.uint8]) -> npt.NDArray[np.int32]:
    sess = ort.InferenceSession(
        model.SerializeToString(), providers=["CPUExecutionProvider"]
    )
    return np.asarray(sess.run(None, {"a": a})[0])


def test_uint8_weights_give_the_exact_integer_product() -> None:
    rng = np.random.default_rng(0)
    b = rng.integers(-128, 128, size=(64, 16), dtype=np.int8)
    b[:, 0] = 127  # the saturating column: 255 * 127 pairs
    zb = rng.integers(-4, 5, size=16, dtype=np.int8)
    a = rng.integers(0, 256, size=(5, 64), dtype=np.uint8)
    a[0] = 255
    model = _graph(b, zb)
    assert unsigned_weights(model.graph) == 2
    onnx.checker.check_model(model)
    kinds = {t.name: t.data_type for t in model.graph.initializer}
    assert kinds == {"za": TensorProto.UINT8, "b_u8": TensorProto.UINT8,
                     "zb_u8": TensorProto.UINT8}  # fmt: skip
    exact = (a.astype(np.int64) - 3) @ (b.astype(np.int64) - zb.astype(np.int64))
    np.testing.assert_array_equal(_run(model, a), exact)


def test_weights_already_uint8_are_left_alone() -> None:
    b = np.full((8, 4), 200, np.uint8)
    model = _graph(b, np.array([128, 128, 128, 128], np.uint8))
    assert unsigned_weights(model.graph) == 0
    a = np.full((2, 8), 10, np.uint8)
    np.testing.assert_array_equal(_run(model, a), np.full((2, 4), 7 * 72 * 8))


def test_a_weight_that_is_not_stored_is_an_error() -> None:
    model = _graph(np.zeros((4, 4), np.int8), np.zeros(4, np.int8))
    model.graph.node[0].input[1] = "computed"
    with pytest.raises(ArtifactMismatchError, match="computed"):
        unsigned_weights(model.graph)


@pytest.mark.parametrize("inputs", [["a", "b"], ["a", "b", "za"], ["a", "b", "za", ""]])
def test_an_omitted_weight_zero_point_becomes_an_explicit_128(
    inputs: list[str],
) -> None:
    # an omitted zero point is 0 of B's type: int8 0, which as uint8 is 128
    rng = np.random.default_rng(1)
    b = rng.integers(-128, 128, size=(32, 8), dtype=np.int8)
    b[:, 0] = 127
    model = _graph(b, np.zeros(8, np.int8))
    model.graph.node[0].ClearField("input")
    model.graph.node[0].input.extend(inputs)
    a = rng.integers(0, 256, size=(3, 32), dtype=np.uint8)
    a[0] = 255
    za = 3 if "za" in inputs else 0
    assert unsigned_weights(model.graph) == 1
    onnx.checker.check_model(model)
    exact = (a.astype(np.int64) - za) @ b.astype(np.int64)
    np.testing.assert_array_equal(_run(model, a), exact)
