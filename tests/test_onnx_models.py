"""Whole models: nutshell against onnxruntime. Tolerance rtol 1e-3, atol 1e-4 scaled
to the output's magnitude (the issue's contract)."""
import numpy as np
import pytest

import nutshell as ns
from conftest import assert_close
from onnx_models import conv_block_model, torch_export, torch_models

ort = pytest.importorskip("onnxruntime")
RTOL, ATOL = 1e-3, 1e-4


def ort_run(model_bytes, feeds):
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(None, feeds)))


@pytest.mark.parametrize("opset", [11, 13, 17])
def test_helper_model_matches_onnxruntime(opset, rng):
    model = conv_block_model(opset).SerializeToString()
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    graph = ns.load_onnx(model)
    got = ns.compile(graph, threads=2).run({"input": x})
    want = ort_run(model, {"input": x})
    assert_close(got["out"], want["out"], RTOL, ATOL)


def test_shape_subgraph_folds_away():
    graph = ns.optimize_graph(ns.load_onnx(conv_block_model().SerializeToString()))
    ops = [n.op for n in graph.nodes]
    assert not {"Shape", "Gather", "Unsqueeze", "Concat"} & set(ops)
    # BN folded, ReLU fused; the pooled 3-channel stem runs blocked up to its pool
    assert ops == ["ConvBlocked", "MaxPool", "FromBlocked", "Reshape", "Gemm", "Softmax"]
    assert graph.nodes[0].attrs["activation"] == "Relu"


TORCH_MODELS = ["lenet", "mlp", "tiny_resnet", "unet_bit"]


@pytest.mark.parametrize("opset", [13, 15, 17])
@pytest.mark.parametrize("name", TORCH_MODELS)
def test_torch_export_matches_onnxruntime(name, opset, rng):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    factory, shape = torch_models()[name]
    x = rng.standard_normal(shape).astype(np.float32)
    model = torch_export(factory(), torch.from_numpy(x), opset)
    compiled = ns.compile(ns.load_onnx(model), threads=2)
    got = compiled(x)
    want = ort_run(model, {"input": x})["output"]
    assert_close(got, want, RTOL, ATOL)
    assert compiled.run({"input": x})["output"].shape == want.shape


def test_resize_opset10_takes_scales_as_second_input(rng):
    from onnx import helper
    from onnx_models import init, make_model, vi
    node = helper.make_node("Resize", ["input", "scales"], ["out"], mode="nearest")
    model = make_model([node], [vi("input", [1, 1, 2, 3])], [vi("out", [1, 1, 4, 6])],
                       [init("scales", np.array([1, 1, 2, 2], np.float32))], opset=10).SerializeToString()
    x = rng.standard_normal((1, 1, 2, 3)).astype(np.float32)
    np.testing.assert_array_equal(ns.compile(ns.load_onnx(model))(x), ort_run(model, {"input": x})["out"])


def test_export_onnx_round_trip(rng, tmp_path):
    graph = ns.load_onnx(conv_block_model().SerializeToString())
    ns.export_onnx(graph, tmp_path / "again.onnx")
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = ort_run(conv_block_model().SerializeToString(), {"input": x})["out"]
    got = ort_run(open(tmp_path / "again.onnx", "rb").read(), {"input": x})["out"]
    assert_close(got, want, RTOL, ATOL)
    assert_close(ns.compile(ns.load_onnx(tmp_path / "again.onnx"))(x), want, RTOL, ATOL)
