"""Ahead-of-time bundles: built with cc, run from C and through ctypes, compared
with onnxruntime and the JIT; bad pointers, threads, dependencies, other targets."""
import ctypes
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nutshell as ns
from nutshell.runtime.aot import AotModel
from nutshell.runtime.model import aligned_empty
from onnx_models import conv_block_model

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
ROOT = Path(__file__).resolve().parents[1]

DRIVER = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "NAME.h"
typedef struct { float *x, *y; void *ws; int threads, code; } job;
static void *work(void *arg) {
    job *j = arg;
    const float *in[] = {j->x};
    float *out[] = {j->y};
    for (int r = 0; r < 20 && !j->code; r++) j->code = NAME_run_threads(in, out, j->ws, j->threads);
    return NULL;
}
int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1, concurrent = argc > 2 ? atoi(argv[2]) : 2;
    float *x = malloc(sizeof(float) * INPUT_SIZE);
    for (long i = 0; i < INPUT_SIZE; i++) x[i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    job jobs[8];
    pthread_t tid[8];
    for (int t = 0; t < concurrent; t++) {
        jobs[t] = (job){x, calloc(OUTPUT_SIZE, sizeof(float)), aligned_alloc(64, (WS + 63) / 64 * 64), threads, 0};
        pthread_create(&tid[t], NULL, work, &jobs[t]);
    }
    for (int t = 0; t < concurrent; t++) pthread_join(tid[t], NULL);
    for (int t = 0; t < concurrent; t++) {
        if (jobs[t].code) { printf("error %d\n", jobs[t].code); return 1; }
        if (memcmp(jobs[t].y, jobs[0].y, sizeof(float) * OUTPUT_SIZE)) { printf("differ\n"); return 1; }
    }
    for (long i = 0; i < OUTPUT_SIZE; i++) printf("%.9g\n", jobs[0].y[i]);
    for (int t = 0; t < concurrent; t++) { free(jobs[t].y); free(jobs[t].ws); }
    free(x);
    return 0;
}
"""


def build_driver(bundle_dir, name, tmp_path):
    src = DRIVER.replace("NAME", name).replace("INPUT_SIZE", f"{name.upper()}_INPUT_0_SIZE") \
        .replace("OUTPUT_SIZE", f"{name.upper()}_OUTPUT_0_SIZE").replace("WS", f"{name.upper()}_WORKSPACE_SIZE")
    c = tmp_path / "driver.c"
    c.write_text(src)
    exe = tmp_path / "driver"
    subprocess.run(["cc", "-O1", "-std=c11", "-pthread", f"-I{bundle_dir}", str(c), str(bundle_dir / f"{name}.o"),
                    "-lpthread", "-lm", "-o", str(exe)], check=True)
    return exe


def driver_input(shape):
    i = np.arange(int(np.prod(shape)))
    return (((i * 7919) % 1000) / 500.0 - 1.0).astype(np.float32).reshape(shape)


@pytest.fixture(scope="module")
def block(tmp_path_factory):
    out = tmp_path_factory.mktemp("bundle")
    model_bytes = conv_block_model().SerializeToString()
    model = ns.compile(ns.load_onnx(model_bytes), threads=2)
    info = model.export(out, name="blk")
    return out, model, model_bytes, info


def test_bundle_files_and_header(block):
    out, model, _, info = block
    assert sorted(p.name for p in out.iterdir()) == ["blk.h", "blk.o", "libblk.so"]
    header = (out / "blk.h").read_text()
    for macro in ("BLK_NUM_INPUTS 1", "BLK_NUM_OUTPUTS 1", "BLK_INPUT_0_SIZE 384", "BLK_OUTPUT_0_SIZE 20",
                  f"BLK_WORKSPACE_SIZE {model.arena_size}", "BLK_INPUT_0_SHAPE[] = {2, 3, 8, 8}"):
        assert macro in header
    assert "int blk_run(const float *const *inputs, float *const *outputs, void *workspace);" in header
    assert "cc app.c blk.o -lpthread -lm" in header          # how to link it, said where it is read


def test_shared_library_matches_onnxruntime_and_jit(block, rng):
    ort = pytest.importorskip("onnxruntime")
    out, model, model_bytes, _ = block
    lib = AotModel(out / "libblk.so", "blk", model.graph)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    got = lib.run({"input": x}, aligned_empty(model.arena_size), threads=2)["out"]
    want = ort.InferenceSession(model_bytes).run(None, {"input": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)
    np.testing.assert_array_equal(got, model(x))


def test_bad_pointers_return_error_codes(block, rng):
    out, model, _, _ = block
    lib = ctypes.CDLL(str(out / "libblk.so"))
    run = lib.blk_run_threads
    run.argtypes, run.restype = [ctypes.c_void_p] * 3 + [ctypes.c_int], ctypes.c_int
    x = rng.standard_normal(384).astype(np.float32)
    y = np.zeros(20, np.float32)
    ws = aligned_empty(model.arena_size + 64)
    ins = (ctypes.c_void_p * 1)(x.ctypes.data)
    outs = (ctypes.c_void_p * 1)(y.ctypes.data)
    null_in = (ctypes.c_void_p * 1)(None)
    odd_in = (ctypes.c_void_p * 1)(x.ctypes.data + 2)
    assert run(None, ctypes.addressof(outs), ws.ctypes.data, 1) == 1
    assert run(ctypes.addressof(null_in), ctypes.addressof(outs), ws.ctypes.data, 1) == 1
    assert run(ctypes.addressof(ins), ctypes.addressof(outs), None, 1) == 1
    assert run(ctypes.addressof(odd_in), ctypes.addressof(outs), ws.ctypes.data, 1) == 2
    assert run(ctypes.addressof(ins), ctypes.addressof(outs), ws.ctypes.data + 8, 1) == 2
    assert run(ctypes.addressof(ins), ctypes.addressof(outs), ws.ctypes.data, 0) == 3
    assert run(ctypes.addressof(ins), ctypes.addressof(outs), ws.ctypes.data, 2) == 0
    lib.blk_error_string.restype = ctypes.c_char_p
    assert b"NULL" in lib.blk_error_string(1) and b"unknown" in lib.blk_error_string(99)


def test_links_only_libc_libm_and_threads(block):
    # The dynamic section's NEEDED entries, not ldd: a library that needs nothing
    # (no libm call, pthread inside libc) is what ldd calls "statically linked".
    out = block[0]
    dynamic = subprocess.run(["readelf", "-d", str(out / "libblk.so")], capture_output=True, text=True,
                             check=True).stdout
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic))
    assert needed <= {"libc.so.6", "libm.so.6", "libpthread.so.0"}, needed


@pytest.mark.parametrize("threads", [1, 2])
def test_concurrent_callers_get_identical_results(block, threads, tmp_path):
    out, model, _, _ = block
    exe = build_driver(out, "blk", tmp_path)
    r = subprocess.run([str(exe), str(threads), "4"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    got = np.array([float(v) for v in r.stdout.split()], np.float32).reshape(2, 10)
    np.testing.assert_allclose(got, model(driver_input((2, 3, 8, 8))), rtol=1e-6, atol=1e-7)


def test_valgrind_memcheck_clean(tmp_path):
    if shutil.which("valgrind") is None:
        pytest.skip("valgrind is not installed")
    # valgrind has no AVX-512: build the bundle for AVX2
    model = ns.compile(ns.load_onnx(conv_block_model().SerializeToString()), threads=1)
    model.export(tmp_path, name="small", target_cpu="x86-64-v3")
    exe = build_driver(tmp_path, "small", tmp_path)
    r = subprocess.run(["valgrind", "--error-exitcode=9", "--leak-check=full", "--errors-for-leak-kinds=definite",
                        str(exe), "1", "1"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ERROR SUMMARY: 0 errors" in r.stderr


def test_other_targets(block, tmp_path):
    model = block[1]
    arm = model.export(tmp_path / "arm", name="blk", triple="aarch64-linux-gnu")
    assert "shared" not in arm
    if shutil.which("readelf"):
        header = subprocess.run(["readelf", "-h", arm["object"]], capture_output=True, text=True).stdout
        assert "AArch64" in header
    v3 = model.export(tmp_path / "v3", name="blk", target_cpu="x86-64-v3")
    if shutil.which("objdump"):
        asm = subprocess.run(["objdump", "-d", v3["object"]], capture_output=True, text=True).stdout
        assert "ymm" in asm and "zmm" not in asm
    with pytest.raises(ns.CompileError, match="unknown --target-cpu"):
        model.export(tmp_path / "x", name="blk", target_cpu="pentium-pro-9000")


def test_training_bundle_steps_like_python(tmp_path, rng):
    ns.manual_seed(0)
    nn = ns.nn
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
    trainer = ns.compile_training(net, (6, 1, 8, 8), optimizer=ns.optim.Adam(lr=1e-2), threads=2)
    info = trainer.export(tmp_path, name="tiny")
    lib = ctypes.CDLL(str(tmp_path / "libtiny.so"))
    lib.tiny_train_step.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_float] + [ctypes.c_void_p] * 2
    for fn in ("tiny_init_state", "tiny_run", "tiny_get_param"):
        getattr(lib, fn).argtypes = None
    state, ws = aligned_empty(info["state_size"]), aligned_empty(info["workspace"])
    assert lib.tiny_train_step(state.ctypes.data, 0, 0, 0.01, ws.ctypes.data, 0) in (1, 4)  # before init
    assert lib.tiny_init_state(ctypes.c_void_p(state.ctypes.data)) == 0
    x = rng.standard_normal((6, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 5, 6)
    loss = np.zeros(1, np.float32)
    for _ in range(3):
        assert lib.tiny_train_step(state.ctypes.data, x.ctypes.data, y.ctypes.data, 0.01, ws.ctypes.data,
                                   loss.ctypes.data) == 0
        assert float(loss[0]) == trainer.step(x, y)
    out = np.zeros((6, 5), np.float32)
    assert lib.tiny_run(ctypes.c_void_p(state.ctypes.data), ctypes.c_void_p(x.ctypes.data),
                        ctypes.c_void_p(out.ctypes.data), ctypes.c_void_p(ws.ctypes.data)) == 0
    np.testing.assert_array_equal(out, trainer.predict(x))
    w = np.zeros(36, np.float32)
    assert lib.tiny_get_param(ctypes.c_void_p(state.ctypes.data), 0, ctypes.c_void_p(w.ctypes.data)) == 0
    np.testing.assert_array_equal(w, net.state_dict()["0.weight"].ravel())
    assert lib.tiny_get_param(ctypes.c_void_p(state.ctypes.data), 99, ctypes.c_void_p(w.ctypes.data)) == 6
    y[0] = 7
    assert lib.tiny_train_step(state.ctypes.data, x.ctypes.data, y.ctypes.data, 0.01, ws.ctypes.data,
                               loss.ctypes.data) == 5


def test_embed_c_examples_run(tmp_path):
    if shutil.which("make") is None:
        pytest.skip("needs make")
    build = tmp_path / "build"
    r = subprocess.run(["make", "-C", str(ROOT / "examples" / "embed_c"), "run", f"BUILD={build}",
                        f"PYTHON={sys.executable}"], capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    classify = float(r.stdout.split("held-out accuracy: ")[1].split("%")[0])
    trained = float(r.stdout.split("held-out accuracy: ")[2].split("%")[0])
    assert classify > 90 and trained > 85
    losses = [float(l.split("mean loss ")[1]) for l in r.stdout.splitlines() if "mean loss" in l]
    assert losses == sorted(losses, reverse=True) and len(losses) == 3
    assert (build / "mlp_weights.bin").stat().st_size == 4 * (784 * 128 + 128 + 128 * 10 + 10)
