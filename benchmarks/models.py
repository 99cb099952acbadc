"""The benchmarks' model names and their export, which runs torch in a child process
(benchmarks/torch_models.py): the benchmark's own process never loads torch, whose
OpenMP runtime would otherwise sit beside nutshell's and ORT's threads (a torch with
its own bundled libgomp made 2-thread runs up to 3x slower)."""
import os
import subprocess
import sys
import tempfile

MODELS = ["lenet5", "lenet5-b64", "resnet18", "resnet50", "resnet50-b8"]
# torchvision architectures with random weights ("tv:NAME[-bN]"); needs
# torchvision (not a CI dependency)
TORCHVISION = ["tv:resnet18", "tv:resnet50-b8", "tv:mobilenet_v2", "tv:mobilenet_v3_small",
               "tv:efficientnet_b0", "tv:squeezenet1_1", "tv:shufflenet_v2_x1_0", "tv:regnet_y_400mf",
               "tv:googlenet", "tv:densenet121", "tv:convnext_tiny", "tv:vit_b_16"]


def export_isolated(name, opset=17):
    """(ONNX bytes, input shape) of a model of torch_models.py, exported by a child process."""
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_models.py")
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        done = subprocess.run([sys.executable, script, name, path, str(opset)], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"exporting {name} failed:\n{done.stderr[-2000:]}")
        with open(path, "rb") as f:
            data = f.read()
    return data, tuple(int(d) for d in done.stdout.split())
