"""Run onnx's node conformance cases (tests/conformance.py's selection) through
nutshell.onnx_backend and print the pass count and the failures grouped by reason.

    python tools/conformance_report.py [-v]"""
import collections
import sys
import warnings
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
warnings.filterwarnings("ignore")

import conformance  # noqa: E402
from nutshell import onnx_backend  # noqa: E402


def _array(value):
    """Case data may hold TensorProtos (as onnx's runner normalises them)."""
    return numpy_helper.to_array(value) if isinstance(value, onnx.TensorProto) else np.asarray(value)


def check(case):
    rep = onnx_backend.prepare(case.model)
    for inputs, outputs in case.data_sets:
        got = rep.run([_array(i) for i in inputs])
        for g, w in zip(got, outputs):
            w = _array(w)
            if g.shape != w.shape or g.dtype != w.dtype:
                raise AssertionError(f"shape/dtype {g.shape} {g.dtype} vs {w.shape} {w.dtype}")
            np.testing.assert_allclose(g, w, rtol=case.rtol, atol=case.atol)


def main():
    passed, reasons = 0, collections.defaultdict(list)
    cases = conformance.cases()
    for case in cases:
        try:
            check(case)
            passed += 1
        except Exception as exc:             # noqa: BLE001 - a report of every failure kind
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:110]}" if str(exc) else type(exc).__name__
            reasons[msg].append(case.name)
    print(f"{passed} / {len(cases)} passed")
    for msg, names in sorted(reasons.items(), key=lambda kv: -len(kv[1])):
        print(f"{len(names):4d}  {msg}")
        if "-v" in sys.argv:
            print("        " + " ".join(names))


if __name__ == "__main__":
    main()
