"""float16 models: stored in float16, computed in float32 (compiler/passes/float16.py).
Each op's result is the float32 result rounded to float16 once, so the compiled
output must equal the float32 reference rounded to float16 to within one float16
ulp of the output's magnitude (rtol 1e-3, atol 1e-3 x magnitude)."""
import numpy as np
import pytest

import nutshell as ns
from conftest import random_feeds, single_op_graph

H = "float16"
CASES = [
    ("MatMul", [(H, (6, 4)), (H, (4, 12))], {}),
    ("MatMul", [(H, (33, 70)), (H, (70, 45))], {}),
    ("Gemm", [(H, (5, 8)), (H, (8, 9)), (H, (9,))], {}),
    ("Conv", [(H, (1, 3, 9, 9)), (H, (4, 3, 3, 3))], {"pads": [1, 1, 1, 1]}),
    ("Add", [(H, (3, 37)), (H, (37,))], {}),
    ("Relu", [(H, (70,))], {}),
    ("Softmax", [(H, (4, 19))], {"axis": -1}),
    ("ReduceMean", [(H, (4, 19))], {"keepdims": 0}),
    ("MaxPool", [(H, (1, 2, 8, 8))], {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ("Transpose", [(H, (3, 5))], {"perm": [1, 0]}),
    # vector math: float16 lanes widened to float32 fill two AVX2 registers, where
    # AVX-512's intrinsics (vscalefps, vrcp14ps, vmaxps) must not be used
    ("Exp", [(H, (70,))], {}),
    ("Sigmoid", [(H, (70,))], {}),
    ("Celu", [(H, (70,))], {}),
    ("Max", [(H, (70,)), (H, (70,))], {}),
]

@pytest.mark.parametrize("vector_cap", [512, 256])
@pytest.mark.parametrize("op,specs,attrs", CASES, ids=[c[0] for c in CASES])
def test_float16_ops_compute_in_float32_and_round_once(op, specs, attrs, vector_cap, rng):
    graph = single_op_graph(op, specs, attrs)
    feeds = random_feeds(graph, rng)
    got = ns.compile(graph, threads=1, vector_cap=vector_cap).run(feeds)
    wide = single_op_graph(op, [("float32", s) for _, s in specs], attrs)
    want = ns.run_reference(wide, {k: v.astype(np.float32) for k, v in feeds.items()})
    for name, value in got.items():
        assert value.dtype == np.float16
        expected = next(iter(want.values())).astype(np.float16).astype(np.float32)
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(value.astype(np.float32), expected, rtol=1e-3, atol=1e-3 * scale)

def test_float16_matmul_matches_onnxruntime(rng):
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT16, [6, 4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT16, [4, 12])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT16, [6, 12])
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["y"])], "g", [a, b], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    feeds = {"a": rng.uniform(-2, 2, (6, 4)).astype(np.float16),
             "b": rng.uniform(-2, 2, (4, 12)).astype(np.float16)}
    got = ns.compile(ns.load_onnx(model), threads=1).run(feeds)["y"]
    want = ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=1e-3, atol=4e-3)
