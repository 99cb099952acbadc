"""Export torchvision architectures (random weights) with torch.onnx.export, as a new
user would, compile them with nutshell and compare with onnxruntime.

    python tools/torchvision_report.py [--opsets 13 17] [--models resnet18 vit_b_16 ...]

Needs torch and torchvision (here: pip install torch==2.14.1 torchvision==0.29.1 in a
separate environment) and onnxruntime. Prints max |error| / max |output| and times."""
import argparse
import io
import time
import warnings

import numpy as np

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0",
          "squeezenet1_1", "shufflenet_v2_x1_0", "regnet_y_400mf", "googlenet", "densenet121",
          "convnext_tiny", "vit_b_16"]


def export(name, opset):
    import torch
    import torchvision
    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    model = getattr(torchvision.models, name)(weights=None, **kwargs).eval()
    torch.backends.mha.set_fastpath_enabled(False)   # the fused attention kernel has no ONNX export
    with torch.no_grad():     # zero-initialised layers (ViT's head) would make the comparison vacuous
        for p in model.parameters():
            if p.numel() > 1 and float(p.abs().max()) == 0.0:
                p.normal_(0.0, 0.02)
    x = torch.randn(1, 3, 224, 224)
    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, x, buf, opset_version=opset, input_names=["input"],
                          output_names=["output"], dynamo=False)
    return buf.getvalue(), x.numpy()


def main():
    import onnxruntime as ort
    import nutshell as ns
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--opsets", nargs="+", type=int, default=[13, 17])
    p.add_argument("--models", nargs="+", default=MODELS)
    args = p.parse_args()
    print(f"{'model':<20} {'opset':>5} {'rel err':>9} {'compile s':>9} {'nutshell ms':>11} {'ort ms':>8}")
    for name in args.models:
        for opset in args.opsets:
            try:
                data, x = export(name, opset)
                t = time.perf_counter()
                model = ns.compile(ns.load_onnx(data), threads=2)
                compile_s = time.perf_counter() - t
                got = model(x)
                sess = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
                want = sess.run(None, {"input": x})[0]
                err = float(np.abs(got - want).max() / max(1e-12, np.abs(want).max()))
                t = time.perf_counter()
                model(x)
                ours = time.perf_counter() - t
                t = time.perf_counter()
                sess.run(None, {"input": x})
                theirs = time.perf_counter() - t
                print(f"{name:<20} {opset:>5} {err:>9.2e} {compile_s:>9.1f} {ours * 1e3:>11.1f} "
                      f"{theirs * 1e3:>8.1f}", flush=True)
            except Exception as exc:  # noqa: BLE001 - a report, not a test
                print(f"{name:<20} {opset:>5} FAILED {type(exc).__name__}: {str(exc)[:150]}", flush=True)


if __name__ == "__main__":
    main()
