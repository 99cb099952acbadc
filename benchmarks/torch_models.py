"""Models for the benchmarks, defined in plain torch (torchvision is not needed) and
exported locally to ONNX. Run by models.export_isolated in a child process:
    python torch_models.py NAME OUT.onnx OPSET   (prints the input shape)"""
import io
import sys

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet18(nn.Module):
    """torchvision's resnet18 layer for layer (same parameter names and count)."""

    def __init__(self, num_classes=1000):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        chans = [64, 128, 256, 512]
        layers, cin = [], 64
        for i, c in enumerate(chans):
            stride = 1 if i == 0 else 2
            layers.append(nn.Sequential(BasicBlock(cin, c, stride), BasicBlock(c, c, 1)))
            cin = c
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class Bottleneck(nn.Module):
    def __init__(self, cin, width, stride):
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = torch.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


class ResNet50(ResNet18):
    """torchvision's resnet50 layer for layer (25,557,032 parameters)."""

    def __init__(self, num_classes=1000):
        nn.Module.__init__(self)
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for i, (width, blocks) in enumerate(zip([64, 128, 256, 512], [3, 4, 6, 3])):
            stage = []
            for b in range(blocks):
                stage.append(Bottleneck(cin, width, 2 if b == 0 and i > 0 else 1))
                cin = width * 4
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2048, num_classes)


def lenet5():
    return nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(), nn.Linear(84, 10))


MODELS = {"lenet5": (lenet5, (1, 1, 28, 28)), "lenet5-b64": (lenet5, (64, 1, 28, 28)),
          "resnet18": (ResNet18, (1, 3, 224, 224)), "resnet50": (ResNet50, (1, 3, 224, 224)),
          "resnet50-b8": (ResNet50, (8, 3, 224, 224))}


def _torchvision(name):
    import torchvision
    arch, _, batch = name[3:].partition("-b")
    kwargs = {"aux_logits": False, "init_weights": True} if arch == "googlenet" else {}
    model = getattr(torchvision.models, arch)(weights=None, **kwargs)
    with torch.no_grad():     # zero-initialised layers (ViT's head) would hide errors
        for p in model.parameters():
            if p.numel() > 1 and float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.02)
    if hasattr(torch.backends, "mha"):
        torch.backends.mha.set_fastpath_enabled(False)   # fused attention has no ONNX export
    return model, (int(batch or 1), 3, 224, 224)


def export(name, opset=17):
    torch.manual_seed(0)
    if name.startswith("tv:"):
        model, shape = _torchvision(name)
        opset = 18 if "vit" in name else opset    # ViT's attention exports at 14 or 18, not 17
    else:
        factory, shape = MODELS[name]
        model = factory()
    buf = io.BytesIO()
    with torch.no_grad():
        torch.onnx.export(model.eval(), torch.randn(shape), buf, opset_version=opset,
                          input_names=["input"], output_names=["output"], dynamo=False)
    return buf.getvalue(), shape


if __name__ == "__main__":
    data, shape = export(sys.argv[1], int(sys.argv[3]))
    with open(sys.argv[2], "wb") as f:
        f.write(data)
    print(*shape)
