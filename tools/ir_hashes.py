"""Whether a refactoring left the generated code alone: a digest of the unoptimised
LLVM IR of each model, per vector width (AVX-512, AVX2) and thread count (1, 2),
and of the emulated CUDA build.

    python tools/ir_hashes.py --out before.json              # on the old checkout
    python tools/ir_hashes.py --compare before.json          # on the new one: lists what changed
    python tools/ir_hashes.py lenet5 train:lstm cuda:lenet5  # some models only

Models: benchmarks/models.py names (exported by torch in a child process, cached
in $TMPDIR/nutshell_ir_hashes), "mobile" (depthwise and pointwise: the blocked
layout), "train:NET" (a training step: cnn_bn, lenet, translator, lstm, unet)
and "cuda:MODEL" / "cudatrain:NET" (cuda-emulated, sm_90)."""
import argparse
from dataclasses import replace
import hashlib
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import nutshell as ns  # noqa: E402
from nutshell.api import to_graph  # noqa: E402
from nutshell.compiler.codegen.model import build_model  # noqa: E402
from nutshell.compiler.lower.target import host_target  # noqa: E402

AVX512_FEATURES = ",+avx512f,+avx512bw,+avx512dq,+avx512vl,+avx512cd"   # only the IR is digested
from nutshell.compiler.passes.pipeline import optimize_graph  # noqa: E402

DEFAULT = ["lenet5", "resnet18", "resnet50-b8", "mobile", "train:cnn_bn", "train:lenet", "train:translator",
           "train:lstm", "train:unet", "cuda:lenet5", "cuda:resnet18", "cudatrain:cnn_bn", "cudatrain:lstm"]
CACHE = os.path.join(tempfile.gettempdir(), "nutshell_ir_hashes")


def onnx_model(name):
    path = os.path.join(CACHE, f"{name}.onnx")
    if not os.path.exists(path):
        from models import export_isolated
        os.makedirs(CACHE, exist_ok=True)
        with open(path, "wb") as f:
            f.write(export_isolated(name)[0])
    return to_graph(open(path, "rb").read())


def mobile():
    m = ns.nn
    layers = [m.Conv2d(3, 32, 3, 2, 1), m.ReLU()]
    for cin, cout in ((32, 64), (64, 128), (128, 128)):
        layers += [m.Conv2d(cin, cin, 3, 1, 1, groups=cin), m.BatchNorm2d(cin), m.ReLU(),
                   m.Conv2d(cin, cout, 1), m.BatchNorm2d(cout), m.ReLU()]
    net = m.Sequential(*layers, m.AdaptiveAvgPool2d(1), m.Flatten(), m.Linear(128, 10), m.Softmax(dim=1))
    net.eval()
    return to_graph(net, (2, 3, 64, 64))


def training_graph(net):
    import training_nets
    from nutshell.training import Recipe, as_optimizer, build_training_graph
    ns.nn.manual_seed(0)
    m = ns.nn
    if net == "cnn_bn":
        recipe = Recipe(training_nets.cnn_bn(m), (8, 3, 32, 32), None, None, "cross_entropy", {})
    elif net == "lenet":
        lenet = m.Sequential(m.Conv2d(1, 6, 5), m.ReLU(), m.MaxPool2d(2), m.Conv2d(6, 16, 5), m.ReLU(),
                             m.AvgPool2d(2), m.Flatten(), m.Linear(256, 10))
        recipe = Recipe(lenet, (16, 1, 28, 28), None, None, "cross_entropy", {})
    else:
        module, inputs, targets = {
            "translator": lambda: training_nets.translator(ns, batch=4, length=8, vocab=50, d=32, heads=2, layers=1),
            "lstm": lambda: training_nets.lstm_classifier(ns, batch=4, length=6, features=16, hidden=32),
            "unet": lambda: training_nets.unet(ns, batch=2, size=16)}[net]()
        recipe = Recipe(module, None, inputs, targets, "cross_entropy", {})
    return build_training_graph(recipe, as_optimizer("adam" if net in ("translator", "lstm", "unet") else "sgd"))[0]


def digest(text):
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def hashes(name):
    """{key: digest} of `name`'s builds."""
    if name.startswith("cuda"):
        from nutshell.compiler.cuda.model import build_gpu_model
        from nutshell.compiler.cuda.target import cuda_target
        from nutshell.runtime.cuda import optimize_for_gpu
        base = name.split(":", 1)[1]
        graph = training_graph(base) if name.startswith("cudatrain:") else onnx_model(base)
        return {name: digest(build_gpu_model(optimize_for_gpu(graph), cuda_target("cuda-emulated"), "m").llvm_ir)}
    out = {}
    for bits in (512, 256):
        for threads in (1, 2):
            target = host_target(threads, bits)
            if target.vector_bits < bits:    # an AVX2 host: the AVX-512 table's code all the same
                target = replace(target, cpu="znver4", features=target.features + AVX512_FEATURES)
            graph = training_graph(name[6:]) if name.startswith("train:") else \
                mobile() if name == "mobile" else onnx_model(name)
            out[f"{name}/v{bits}/t{threads}"] = digest(build_model(optimize_graph(graph, target=target), target).llvm_ir)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=DEFAULT)
    ap.add_argument("--out", help="write the digests to this JSON file")
    ap.add_argument("--compare", help="a JSON file of digests to compare with")
    args = ap.parse_args()
    found = {}
    for name in args.models:
        for key, value in hashes(name).items():
            found[key] = value
            print(key, value, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(found, f, indent=1)
    if args.compare:
        with open(args.compare) as f:
            before = json.load(f)
        changed = sorted(k for k in found if k in before and before[k] != found[k])
        print(f"{len(changed)} of {sum(k in before for k in found)} builds changed" +
              "".join(f"\n  {k}" for k in changed))
        sys.exit(1 if changed else 0)


if __name__ == "__main__":
    main()
