"""Small ONNX models built with onnx.helper and exported from torch, for tests."""
import io

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def make_model(nodes, inputs, outputs, initializers=(), opset=13, name="test"):
    graph = helper.make_graph(nodes, name, inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def vi(name, shape, elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, shape)


def init(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def conv_block_model(opset=13, rng=None):
    """Conv -> BN -> Relu -> MaxPool -> GlobalAveragePool -> Flatten -> Gemm -> Softmax,
    plus a shape subgraph (Shape/Gather/Unsqueeze/Concat) feeding Reshape."""
    rng = rng or np.random.default_rng(0)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)
    nodes = [
        helper.make_node("Conv", ["input", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
        helper.make_node("BatchNormalization", ["c", "s", "bb", "m", "v"], ["bn"], epsilon=1e-5),
        helper.make_node("Relu", ["bn"], ["r"]),
        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["p"], ["shp"]),
        helper.make_node("Gather", ["shp", "zero"], ["n"], axis=0),
        helper.make_node("Unsqueeze", ["n", "axes0"] if opset >= 13 else ["n"], ["n1"],
                         **({} if opset >= 13 else {"axes": [0]})),
        helper.make_node("Concat", ["n1", "minus1"], ["newshape"], axis=0),
        helper.make_node("Reshape", ["p", "newshape"], ["flat"]),
        helper.make_node("Gemm", ["flat", "fw", "fb"], ["logits"], transB=1),
        helper.make_node("Softmax", ["logits"], ["out"], axis=1),
    ]
    inits = [init("w", f(8, 3, 3, 3)), init("b", f(8)), init("s", np.abs(f(8)) + 0.5), init("bb", f(8)),
             init("m", f(8)), init("v", np.abs(f(8)) + 0.5), init("zero", np.array(0, np.int64)),
             init("axes0", np.array([0], np.int64)), init("minus1", np.array([-1], np.int64)),
             init("fw", f(10, 8 * 4 * 4) * 0.1), init("fb", f(10))]
    return make_model(nodes, [vi("input", [2, 3, 8, 8])], [vi("out", [2, 10])], inits, opset)


def torch_export(module, example, opset, input_names=("input",), output_names=("output",)):
    import torch
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(module.eval(), example, buf, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamo=False)
    return buf.getvalue()


def torch_models():
    """name -> (module factory, input shape): LeNet, an MLP, a ResNet basic block net,
    a VGG-style block with BatchNorm, upsampling and concatenation."""
    import torch
    from torch import nn

    class LeNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 6, 5, padding=2), nn.Conv2d(6, 16, 5)
            self.f1, self.f2, self.f3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

        def forward(self, x):
            x = torch.max_pool2d(torch.relu(self.c1(x)), 2)
            x = torch.max_pool2d(torch.relu(self.c2(x)), 2)
            x = x.view(x.size(0), -1)
            return torch.log_softmax(self.f3(torch.relu(self.f2(torch.relu(self.f1(x))))), 1)

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.short = nn.Sequential() if stride == 1 and cin == cout else nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            return torch.relu(self.b2(self.c2(y)) + self.short(x))

    class TinyResNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                                      nn.MaxPool2d(3, 2, 1))
            self.layers = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2))
            self.head = nn.Linear(32, 10)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.head(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    class UNetBit(nn.Module):
        def __init__(self):
            super().__init__()
            self.down = nn.Conv2d(3, 8, 3, 2, 1)
            self.up = nn.Upsample(scale_factor=2, mode="nearest")
            self.out = nn.Conv2d(11, 4, 1)

        def forward(self, x):
            y = self.up(nn.functional.elu(self.down(x)))
            z = torch.cat([y, x], 1)
            return torch.sigmoid(self.out(z)).mean(dim=(2, 3)) + torch.tanh(z).sum(dim=1).mean()

    def randomize_bn(m):
        g = torch.Generator().manual_seed(0)
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(torch.randn(mod.num_features, generator=g) * 0.1)
                mod.running_var.copy_(torch.rand(mod.num_features, generator=g) + 0.5)
        return m

    return {
        "lenet": (LeNet, (4, 1, 28, 28)),
        "mlp": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.LeakyReLU(0.1),
                                      nn.Dropout(0.3), nn.Linear(128, 10), nn.Softmax(dim=1)),
                (3, 1, 28, 28)),
        "tiny_resnet": (lambda: randomize_bn(TinyResNet()), (2, 3, 32, 32)),
        "unet_bit": (UNetBit, (1, 3, 16, 16)),
    }
