"""The real architectures the onnx package ships under backend/test/data/light/
(AlexNet, DenseNet-121, Inception v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19,
ZFNet-512): they compile and match their reference outputs (rtol 1e-3, atol 1e-4
scaled to the output), and ONNX Runtime's when it is installed."""
import os

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import nutshell as ns
from conftest import assert_close

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
MODELS = sorted(f[len("light_"):-len(".onnx")] for f in os.listdir(LIGHT) if f.endswith(".onnx")) \
    if os.path.isdir(LIGHT) else []


def _reference_output(name):
    tensor = onnx.TensorProto()
    with open(os.path.join(LIGHT, f"light_{name}_output_0.pb"), "rb") as f:
        tensor.ParseFromString(f.read())
    return numpy_helper.to_array(tensor)


@pytest.mark.parametrize("name", MODELS)
def test_light_model_matches_reference(name):
    path = os.path.join(LIGHT, f"light_{name}.onnx")
    graph = ns.load_onnx(path)
    model = ns.compile(graph, threads=2)
    # the stored outputs were made (by onnx's runner) from inputs arange(n) / n
    feeds = {v.name: (np.arange(v.type.size) / v.type.size).astype(np.float32).reshape(v.type.shape)
             for v in graph.inputs}
    got = model.run(feeds)[graph.outputs[0].name]
    assert_close(got, _reference_output(name), 1e-3, 1e-4)
    try:
        import onnxruntime as ort
    except ImportError:
        return
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert_close(got, want, 1e-3, 1e-4)
