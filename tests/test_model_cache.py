"""BAD_INPUTS row 29: the compiled-model cache. A forged, truncated or garbled
entry is discarded and rebuilt, nothing is unpickled, and the key covers
everything that changes the code (the vector width too)."""
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from onnx import helper

import nutshell as ns
from nutshell.compiler.lower.target import host_target
from nutshell.runtime.jit import DiskCache
from nutshell.runtime.model_cache import ModelCache, decode_entry, encode_entry, graph_key
from onnx_models import make_model, vi


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NUTSHELL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NUTSHELL_CACHE", raising=False)
    return tmp_path / "cache"


def tanh_graph():
    m = make_model([helper.make_node("Tanh", ["x"], ["y"])], [vi("x", [4, 40])], [vi("y", [4, 40])])
    return ns.optimize_graph(ns.load_onnx(m.SerializeToString()))


def entry_of(graph, threads=1, vector_cap=512):
    return ModelCache(graph, host_target(threads, vector_cap), "tanh_test")


def rewrite(cache, payload):
    """Write `payload` as the entry with a valid checksum, as a forger would."""
    with open(cache.path, "wb") as f:
        f.write(cache._digest(payload) + payload)


def test_key_covers_the_vector_width():
    g = tanh_graph()
    keys = {graph_key(g, host_target(1, cap), "m") for cap in (512, 256, 32)}
    assert len(keys) == 3


def test_scalar_compile_after_avx2_is_not_a_cache_hit(cache_dir):
    g = tanh_graph()
    ns.compile(g, threads=1, vector_cap=256, name="tanh_test")
    scalar = ns.compile(g, threads=1, vector_cap=32, name="tanh_test")
    assert not scalar.jit.from_cache


def test_forged_pickle_entry_is_never_unpickled(cache_dir, tmp_path):
    g = tanh_graph()
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    cache = entry_of(g)
    os.makedirs(os.path.dirname(cache.path), exist_ok=True)
    rewrite(cache, pickle.dumps({"object": Payload()}))
    x = np.linspace(-2, 2, 160, dtype=np.float32).reshape(4, 40)
    np.testing.assert_allclose(ns.compile(g, threads=1, name="tanh_test")(x), np.tanh(x), rtol=1e-5, atol=1e-6)
    assert not marker.exists()
    decode_entry(cache.load())          # rebuilt in the new layout


def test_truncated_entry_is_rebuilt(cache_dir):
    g = tanh_graph()
    ns.compile(g, threads=1, name="tanh_test")
    cache = entry_of(g)
    with open(cache.path, "r+b") as f:
        f.truncate(os.path.getsize(cache.path) // 2)
    assert cache.load() is None
    ns.compile(g, threads=1, name="tanh_test")
    assert cache.load_code(g) is not None


def test_garbled_object_with_valid_checksum_is_discarded(cache_dir):
    """LLVM aborts the process on a malformed object (LLVM ERROR): the entry is checked
    in a child first, so the run goes on, and the model is rebuilt."""
    g = tanh_graph()
    ns.compile(g, threads=1, name="tanh_test")
    cache = entry_of(g)
    obj, meta, tables = decode_entry(cache.load())
    garbled = bytearray(obj)
    garbled[0x28:0x30] = (len(obj) * 7).to_bytes(8, "little")     # e_shoff: section headers past the end
    code = ns.compile(g, threads=1, name="tanh_test").code
    rewrite(cache, encode_entry(bytes(garbled), code, tables))
    script = ("import numpy as np, nutshell as ns, sys; sys.path.insert(0, 'tests');"
              "from test_model_cache import tanh_graph;"
              "m = ns.compile(tanh_graph(), threads=1, name='tanh_test');"
              "x = np.ones((4, 40), np.float32); assert np.allclose(m(x), np.tanh(x)); print('ok')")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root,
                         env=dict(os.environ, NUTSHELL_CACHE_DIR=str(cache_dir)), timeout=300)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]
    assert decode_entry(cache.load())[0] != bytes(garbled)      # rebuilt


def test_training_step_compile_is_cached_and_steps_alike(cache_dir):
    """A training step is cached as a whole model (keyed by the optimised step graph):
    the second compile links the stored object, and both trainers step alike."""
    def trainer(momentum):
        ns.manual_seed(0)
        net = ns.nn.Sequential(ns.nn.Linear(6, 5), ns.nn.ReLU(), ns.nn.Linear(5, 3))
        return ns.compile_training(net, input_shape=(4, 6), threads=1,
                                   optimizer=ns.optim.SGD(lr=0.1, momentum=momentum))
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    y = np.array([0, 2, 1, 2])
    cold, warm = trainer(0.9), trainer(0.9)
    assert cold.model.code.llvm_ir is not None and warm.model.code.llvm_ir is None
    assert warm.model.graph is cold.model.graph             # this process optimised the step once
    for _ in range(3):
        assert cold.step(x, y) == warm.step(x, y)
    assert trainer(0.5).model.code.llvm_ir is not None      # another update rule: a miss


def _mlp_trainer():
    ns.manual_seed(0)
    net = ns.nn.Sequential(ns.nn.Linear(6, 16), ns.nn.ReLU(), ns.nn.Linear(16, 3))
    return ns.compile_training(net, input_shape=(4, 6), threads=2, optimizer=ns.optim.SGD(lr=0.1, momentum=0.9))


def _steps(trainer):
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    y = np.array([0, 2, 1, 2])
    return [trainer.step(x, y) for _ in range(3)], trainer.parameters()


@pytest.mark.parametrize("children_work", [True, False])
def test_split_build_steps_as_one_module_and_is_cached(cache_dir, monkeypatch, children_work):
    """A large model is emitted in parts compiled by child processes (runtime/parallel_jit.py):
    its steps are bit-identical to a one-module build, its objects are cached together,
    and a child that fails leaves its part to the parent."""
    from nutshell.compiler.codegen import model as codegen_model
    from nutshell.runtime import parallel_jit
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    whole = _steps(_mlp_trainer())
    monkeypatch.delenv("NUTSHELL_CACHE")
    monkeypatch.setattr(codegen_model, "PART_BUDGET", 60)
    if not children_work:
        monkeypatch.setattr(parallel_jit, "_CHILD", "import sys; sys.exit(3)")
    split = _mlp_trainer()
    assert len(split.model.code.parts) > 2
    assert isinstance(split.model.jit.object, list) and len(split.model.jit.object) == len(split.model.code.parts)
    assert "define" in split.model.source("optimized") and split.model.source("asm")
    warm = _mlp_trainer()
    assert warm.model.code.llvm_ir is None
    for trainer in (split, warm):
        losses, params = _steps(trainer)
        assert losses == whole[0]
        for name, value in params.items():
            np.testing.assert_array_equal(value, whole[1][name])


def test_one_child_compiles_every_part_it_is_given(monkeypatch):
    """A child serves part after part: each gets its own object (a target machine shared
    across parts was freed with the first part's engine, and the child died on the
    second, leaving every later part of its share to the parent, serially)."""
    from nutshell.runtime import parallel_jit
    monkeypatch.setattr(parallel_jit, "MAX_CHILDREN", 1)
    compiler = parallel_jit.PartCompiler(host_target(1))
    for k in range(3):
        compiler.submit(f"define float @part{k}(float %x) {{\n  %y = fmul float %x, %x\n  ret float %y\n}}\n")
    objects = compiler.objects()
    assert len(objects) == 3 and all(obj is not None and obj[:4] == b"\x7fELF" for obj, _ in objects)


STEP_SCRIPT = """
import sys, numpy as np, nutshell as ns
ns.manual_seed(0)
net = ns.nn.Sequential(ns.nn.Linear(6, {hidden}), ns.nn.ReLU(), ns.nn.Linear({hidden}, 3))
t = ns.compile_training(net, input_shape=(4, 6), threads=1, optimizer=ns.optim.SGD(lr=0.1, momentum=0.9){extra})
loss = t.step(np.ones((4, 6), np.float32), np.array([0, 2, 1, 2]))
print('cached' if t.model.code.llvm_ir is None else 'built', np.isfinite(loss))
"""


def _fresh_step(cache_dir, hidden=5, extra=""):
    run = subprocess.run([sys.executable, "-c", STEP_SCRIPT.format(hidden=hidden, extra=extra)],
                         capture_output=True, text=True, env=dict(os.environ, NUTSHELL_CACHE_DIR=str(cache_dir)),
                         timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout.split()


def test_fresh_process_step_cache_hits_misses_and_rebuilds_a_garbled_entry(cache_dir):
    """A new process finds the step cached; a changed weight shape or option misses;
    an entry whose object is garbled under a valid checksum fails the link check (its
    child started before the passes, from the step's hint) and is rebuilt, no crash."""
    assert _fresh_step(cache_dir) == ["built", "True"]
    assert _fresh_step(cache_dir) == ["cached", "True"]
    assert _fresh_step(cache_dir, hidden=7) == ["built", "True"]
    assert _fresh_step(cache_dir, extra=", label_smoothing=0.1") == ["built", "True"]
    for path in cache_dir.glob("*/*.model"):
        cache = DiskCache(path.stem, ".model")
        assert cache.path == str(path)
        obj, meta, tables = decode_entry(cache.load())
        garbled = bytearray(obj)
        garbled[0x28:0x30] = (len(obj) * 7).to_bytes(8, "little")     # section headers past the end
        payload = bytearray(cache.load())
        payload[payload.index(obj):payload.index(obj) + len(obj)] = garbled
        rewrite(cache, bytes(payload))
    assert _fresh_step(cache_dir) == ["built", "True"]
    assert _fresh_step(cache_dir) == ["cached", "True"]


def test_collector_is_paused_while_emitting_and_restored_after():
    """build_and_jit pauses the cyclic collector (emission is all live objects); with
    overlapping compiles it comes back on when the last ends, and never turns on a
    collector the caller had turned off."""
    import gc
    import threading
    from nutshell.runtime.parallel_jit import collector_paused
    assert gc.isenabled()
    first_in, second_done = threading.Event(), threading.Event()

    def other():
        with collector_paused():
            first_in.set()
            second_done.wait(10)
    thread = threading.Thread(target=other)
    thread.start()
    first_in.wait(10)
    with collector_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()           # the other compile is still emitting
    second_done.set()
    thread.join()
    assert gc.isenabled()
    gc.disable()
    try:
        with collector_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
