"""Hostile models against generated code (issue 14): names that try to write C,
graph inputs and duplicate names as outputs, a foreign or corrupted training state."""
import ctypes
import shutil
import subprocess

import numpy as np
import pytest
from onnx import helper

import nutshell as ns
from nutshell.runtime.model import aligned_empty
from onnx_models import make_model, vi

needs_cc = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")

# A name that closed the string and the comment, then defined a constructor that
# ran when any program including the header started (issue 14, item 1).
INJECTION = 'x" */\n__attribute__((constructor)) static void pwn(void) { puts("PWNED"); }\n#define J "'
HOSTILE_NAMES = [INJECTION, 'back\\slash\\', "tri??/\ngraph??=", "é 名前 \x01\x7f", "*/ /* // end\\"]

PRINT_NAMES = r"""
#include <stdio.h>
#include "hm.h"
static void hex(const char *s) { for (; *s; s++) printf("%02x", (unsigned char)*s); printf("\n"); }
int main(void) {
    hex(HM_INPUT_0_NAME);
    hex(HM_OUTPUT_0_NAME);
    return 0;
}
"""


def relu_model(x_name, y_name):
    return make_model([helper.make_node("Relu", [x_name], [y_name])], [vi(x_name, [2, 3])], [vi(y_name, [2, 3])])


@needs_cc
@pytest.mark.parametrize("x_name,y_name", list(zip(HOSTILE_NAMES, HOSTILE_NAMES[1:] + HOSTILE_NAMES[:1])))
def test_names_in_the_header_are_data_never_code(x_name, y_name, tmp_path):
    model = ns.compile(ns.load_onnx(relu_model(x_name, y_name).SerializeToString()), threads=1)
    model.export(tmp_path, name="hm")
    src = tmp_path / "main.c"
    src.write_text(PRINT_NAMES)
    exe = tmp_path / "main"
    build = subprocess.run(["cc", "-std=c99", "-trigraphs", "-Wall", "-Werror", f"-I{tmp_path}", str(src),
                            "-o", str(exe)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "PWNED" not in r.stdout
    assert r.stdout.split() == [x_name.encode().hex(), y_name.encode().hex()]   # the names, byte for byte
    header = (tmp_path / "hm.h").read_text()
    assert header.isascii() and not any(line.startswith("__attribute__") for line in header.splitlines())


@needs_cc
def test_bundle_name_is_an_ascii_c_identifier(tmp_path):
    model = ns.compile(ns.load_onnx(relu_model("x", "y").SerializeToString()), threads=1)
    written = model.export(tmp_path, name="modèle ß")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["libmod_le__.so", "mod_le__.h", "mod_le__.o"]
    assert "MOD_LE___NUM_INPUTS 1" in (tmp_path / "mod_le__.h").read_text() and written["shared"]


def test_names_never_reach_the_llvm_ir():
    model = ns.compile(ns.load_onnx(relu_model(INJECTION, "y").SerializeToString()), threads=1)
    for kind in ("llvm", "loops"):
        assert "PWNED" not in model.source(kind)


def test_onnx_export_keeps_hostile_names_as_data(tmp_path):
    from nutshell.frontends.onnx_export import export_onnx
    graph = ns.load_onnx(relu_model(INJECTION, HOSTILE_NAMES[2]).SerializeToString())
    path = tmp_path / "h.onnx"
    export_onnx(graph, path)
    back = ns.load_onnx(str(path))
    assert [v.name for v in back.inputs] == [INJECTION] and [v.name for v in back.outputs] == [HOSTILE_NAMES[2]]


def echo_models():
    """Outputs that no kernel writes into their own buffer: a graph input, a weight,
    and one name listed twice (issue 14, item 3; BAD_INPUTS row 26)."""
    relu = [helper.make_node("Relu", ["x"], ["y"])]
    weight = helper.make_tensor("w", 1, [2], [1.5, -2.5])
    return {"input": make_model(relu, [vi("x", [2, 3])], [vi("y", [2, 3]), vi("x", [2, 3])]),
            "twice": make_model(relu, [vi("x", [2, 3])], [vi("y", [2, 3]), vi("y", [2, 3])]),
            "weight": make_model(relu, [vi("x", [2, 3])], [vi("y", [2, 3]), vi("w", [2])], [weight])}


X = np.arange(6, dtype=np.float32).reshape(2, 3) - 2.5
EXPECTED = {"x": X, "y": np.maximum(X, 0), "w": np.array([1.5, -2.5], np.float32)}


def call_native(fn, model, extra=()):
    """Call an entry point with every output buffer full of NaN; returns the buffers."""
    from nutshell.runtime.model import _pointer_array
    outs = [np.full(v.type.shape, np.nan, np.float32) for v in model.outputs]
    ins, outp = _pointer_array([X]), _pointer_array(outs)
    code = fn(ctypes.addressof(ins), ctypes.addressof(outp), *extra)
    assert code == 0
    return outs


@pytest.mark.parametrize("kind", ["input", "twice", "weight"])
def test_every_output_is_written_by_the_jit(kind):
    model = ns.compile(ns.load_onnx(echo_models()[kind].SerializeToString()), threads=1)
    ws = model._workspace().ctypes.data
    outs = call_native(model._fn, model, (ws, ctypes.addressof(model._const_ptrs), 1))
    for v, got in zip(model.outputs, outs):
        np.testing.assert_array_equal(got, EXPECTED[v.name])


@needs_cc
@pytest.mark.parametrize("kind", ["input", "twice", "weight"])
def test_every_output_is_written_by_the_aot_bundle(kind, tmp_path):
    model = ns.compile(ns.load_onnx(echo_models()[kind].SerializeToString()), threads=1)
    model.export(tmp_path, name="echo")
    lib = ctypes.CDLL(str(tmp_path / "libecho.so"))
    run = lib.echo_run_threads
    run.argtypes, run.restype = [ctypes.c_void_p] * 3 + [ctypes.c_int], ctypes.c_int
    outs = call_native(run, model, (aligned_empty(max(model.arena_size, 64)).ctypes.data, 1))
    for v, got in zip(model.outputs, outs):
        np.testing.assert_array_equal(got, EXPECTED[v.name])
