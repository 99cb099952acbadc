"""Hostile inputs to what landed with the CUDA backend, the distributed options,
the parallel module compile and the training memo: each a clear error, never an
option silently ignored, a stale cache key or a truncated object linked."""
import io
import struct
import time

import numpy as np
import pytest

import nutshell as ns
from nutshell.compiler.ir import GraphBuilder
from nutshell.compiler.lower.target import host_target

KW = dict(input_shape=(2, 4), example_targets=np.array([0, 1]))


def _net():
    return ns.nn.Sequential(ns.nn.Linear(4, 3))


def _constant_graph(value):
    b = GraphBuilder("k", fold=False)
    x = b.add_input("x", "float32", (3,))
    c = b.add_node("Constant", [], {"value": np.full(3, value, np.float32)})
    b.set_outputs([b.add_node("Add", [x, c])])
    return b.build()


def test_cache_key_covers_tensor_attributes():
    """The training memo keys the graph before the passes fold Constant nodes: a
    tensor attribute's values must be in the key, not only its dtype and shape."""
    from nutshell.runtime.model_cache import graph_key
    target = host_target(1)
    assert graph_key(_constant_graph(1.0), target, "k") != graph_key(_constant_graph(2.0), target, "k")


@pytest.mark.parametrize("threads", [0, -1, 2 ** 31, 1.5])
def test_gpu_targets_check_threads(threads):
    with pytest.raises(ns.CompileError, match="threads"):
        ns.compile(_net(), input_shape=(2, 4), target="cuda-emulated", threads=threads)
    with pytest.raises(ns.CompileError, match="threads"):
        ns.compile_training(_net(), target="cuda-emulated", threads=threads, **KW)


def test_arch_without_a_gpu_target_is_refused():
    with pytest.raises(ns.CompileError, match="arch"):
        ns.compile(_net(), input_shape=(2, 4), arch="sm_90")


def test_distributed_step_refuses_a_gpu_target():
    """The distributed trainer compiles its stages for the CPU: a GPU target asked
    with distributed= must not be ignored (and must fail before MPI is needed)."""
    with pytest.raises(ns.CompileError, match="distributed"):
        ns.compile_training(_net(), distributed="mpi", target="cuda-emulated", **KW)


@pytest.mark.parametrize("cap", [0, -1, float("nan"), "x", True, [25]])
def test_bucket_cap_mb_checked_even_without_distributed(cap):
    with pytest.raises((ValueError, TypeError), match="bucket_cap_mb"):
        ns.compile_training(_net(), bucket_cap_mb=cap, **KW)


@pytest.mark.parametrize("flag", ["yes", 1, None])
def test_sync_batchnorm_must_be_a_bool(flag):
    with pytest.raises(TypeError, match="sync_batchnorm"):
        ns.compile_training(_net(), sync_batchnorm=flag, **KW)


class _FakeChild:
    """A part compiler child that announces `size` bytes and sends `sent` of them."""

    def __init__(self, size, sent):
        self.stdin = io.BytesIO()
        self.stdout = io.BytesIO(struct.pack("<Q", size) + sent)
        self.killed = False

    def kill(self):
        self.killed = True

    def wait(self):
        return 0


def test_a_truncated_part_object_is_not_linked():
    """A child that dies half-way through its object: the parent compiles that part
    itself instead of handing LLVM a truncated ELF."""
    from nutshell.runtime.parallel_jit import PartCompiler
    compiler = PartCompiler(host_target(1))
    compiler.parts.append("; empty")
    child = _FakeChild(4096, b"\x7fELF" + b"\0" * 100)
    assert compiler._compile(child, 0) is None
    assert compiler._compile(_FakeChild(2 ** 62, b"\x7fELF"), 0) is None
    whole = _FakeChild(8, b"\x7fELF\0\0\0\0")
    assert compiler._compile(whole, 0) == b"\x7fELF\0\0\0\0"


@pytest.mark.parametrize("extra", [["--target", "cuda", "--triple", "aarch64-linux-gnu"],
                                   ["--target", "cuda", "--target-cpu", "znver4"],
                                   ["--target", "cuda", "--emit-llvm"], ["--target", "cuda", "--threads", "4"],
                                   ["--arch", "sm_80"]])
def test_cli_refuses_options_of_the_other_target(tmp_path, capsys, extra):
    """Host-code options with --target cuda (and --arch without it) are errors, not
    dropped: a cross-compile asked for must not silently produce host objects."""
    from nutshell.cli import main
    model = tmp_path / "m.onnx"
    ns.export_onnx(_net(), str(model), input_shape=(2, 4))
    assert main(["compile", str(model), "-o", str(tmp_path / "out"), *extra]) == 2
    assert "target" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


class _AllocFailingDriver:
    """Driver calls on host memory whose cuMemAlloc fails once `budget` allocations are spent."""

    def __init__(self):
        self.live, self.budget = {}, None

    def cuMemAlloc(self, nbytes):
        if self.budget is not None:
            if self.budget == 0:
                return (2,)                   # CUDA_ERROR_OUT_OF_MEMORY
            self.budget -= 1
        buf = np.zeros(max(int(nbytes), 1), np.uint8)
        self.live[buf.ctypes.data] = buf
        return 0, buf.ctypes.data

    def cuMemFree(self, ptr):
        self.live.pop(int(ptr))
        return (0,)

    def cuMemcpyHtoD(self, dst, src, nbytes):
        return (0,)

    cuMemcpyDtoH = cuMemcpyDtoD = cuMemcpyHtoD

    def cuCtxSetCurrent(self, ctx):
        return (0,)

    def cuModuleLoadData(self, image):
        return 0, "module"

    def cuModuleGetFunction(self, module, name):
        return 0, name

    def cuModuleUnload(self, module):
        return (0,)


def test_driver_runner_frees_its_buffers_when_an_allocation_fails():
    """Out of device memory half-way through a call's allocations: a clear error,
    and what the call had allocated is freed (a retry loop must not leak)."""
    from nutshell.compiler.cuda.model import build_gpu_model
    from nutshell.compiler.cuda.target import cuda_target
    from nutshell.runtime.cuda import optimize_for_gpu
    from nutshell.runtime.cuda_driver import CudaModel
    graph = optimize_for_gpu(ns.api.to_graph(ns.nn.Sequential(ns.nn.Linear(4, 3)), (2, 4)))
    fake = _AllocFailingDriver()
    model = CudaModel(graph, build_gpu_model(graph, cuda_target("cuda"), "m"), "ptx", cuda_target("cuda"),
                      (fake, "ctx", "sm_90"))
    kept = len(fake.live)                    # the weights and the arena
    fake.budget = 1                          # the input's buffer, then out of memory
    with pytest.raises(ns.CompileError, match="cuMemAlloc"):
        model(np.ones((2, 4), np.float32))
    assert len(fake.live) == kept


@pytest.mark.parametrize("forge", ["count_as_int", "negative", "huge", "text", "garbage_part", "elf_stub_part",
                                   "no_objects"])
def test_forged_split_build_entry_is_discarded_and_rebuilt(tmp_path, monkeypatch, forge):
    """A cache entry of a split build (several objects) forged with a valid checksum:
    the object list's sizes wrong, of the wrong type, or a part that is not a linkable
    object. The model is rebuilt and right; nothing forged is linked in this process."""
    import json
    from nutshell.runtime.model_cache import ModelCache
    monkeypatch.setenv("NUTSHELL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NUTSHELL_CACHE", raising=False)
    graph = _constant_graph(3.0)
    first = ns.compile(graph, threads=1, name="forged")
    cache = ModelCache(ns.optimize_graph(graph), host_target(1), "forged")
    payload = cache.load()
    size = struct.unpack_from("<Q", payload)[0]
    meta, obj = json.loads(payload[8:8 + size]), payload[8 + size:]
    parts = {"count_as_int": (len(obj), [obj]), "negative": ([-8, len(obj) + 8], [obj]),
             "huge": ([2 ** 62], [obj]), "text": (["12"], [obj]), "no_objects": ([], []),
             "garbage_part": ([len(obj), 64], [obj, b"\x00" * 64]),
             "elf_stub_part": ([len(obj), 64], [obj, b"\x7fELF" + b"\x02" * 60])}[forge]
    meta["object_bytes"] = parts[0]
    head = json.dumps(meta).encode()
    forged = struct.pack("<Q", len(head)) + head + b"".join(parts[1])
    with open(cache.path, "wb") as f:
        f.write(cache._digest(forged) + forged)
    again = ns.compile(graph, threads=1, name="forged")
    assert cache.load() != forged            # discarded, and the rebuilt model stored
    x = {"x": np.arange(3, dtype=np.float32)}
    np.testing.assert_array_equal(list(again.run(x).values())[0], list(first.run(x).values())[0])


@pytest.mark.parametrize("cap", ["x", None, 0, -1, 7, True, 256.0])
def test_vector_cap_of_the_wrong_type_or_range(cap):
    with pytest.raises(ns.CompileError, match="vector_cap"):
        ns.compile(_net(), input_shape=(2, 4), threads=1, vector_cap=cap)


def test_cuda_export_of_a_model_without_kernels_runs(tmp_path):
    """BAD_INPUTS row 26 for --target cuda: a graph whose output is its input has no
    launch, only a copy; NAME_host.c still builds (ISO C11) and writes the output."""
    import os
    import shutil
    import subprocess
    from nutshell.runtime.cuda import optimize_for_gpu
    from nutshell.runtime.cuda_aot import export_cuda
    from test_cuda_host import APP, FAKE_LIBCUDA
    cc, include = shutil.which("cc") or shutil.which("gcc"), "/usr/local/cuda/include"
    if cc is None or not os.path.exists(os.path.join(include, "cuda.h")):
        pytest.skip("needs a C compiler and cuda.h")
    b = GraphBuilder("m", fold=False)
    b.set_outputs([b.add_input("x", "float32", (3,))])
    export_cuda(optimize_for_gpu(b.build()), tmp_path, "m")
    (tmp_path / "fake.c").write_text(FAKE_LIBCUDA + "int fake_nargs(const char *name) { return -1; }\n")
    (tmp_path / "app.c").write_text(APP)
    run = lambda *cmd, **kw: subprocess.run([str(c) for c in cmd], capture_output=True, text=True, cwd=tmp_path,
                                            **kw)
    r = run(cc, "-std=c11", "-pedantic-errors", "-fsyntax-only", f"-I{include}", "-I.", "m_host.c")
    assert r.returncode == 0, r.stderr
    r = run(cc, f"-I{include}", "-I.", "app.c", "m_host.c", "m_weights.o", "fake.c", "-o", "app", "-ldl",
            "-lpthread")
    assert r.returncode == 0, r.stderr
    x = np.array([1.5, -2.0, 3.25], np.float32)
    x.tofile(tmp_path / "x.bin")
    r = run(tmp_path / "app", "x.bin", "y.bin", env=dict(os.environ, FAKE_KERNELS="libc.so.6"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_array_equal(np.fromfile(tmp_path / "y.bin", np.float32), x)
    r = run(tmp_path / "app", "x.bin", "y.bin", env=dict(os.environ, FAKE_KERNELS="/nonexistent.so"))
    assert r.returncode == 8 and "CUDA driver call failed" in r.stderr, r.stderr     # cuInit failed


def test_training_memo_never_serves_a_stale_step(monkeypatch):
    """The in-process memo of optimised step graphs: a recompile after load_state_dict,
    or with other hyperparameters, trains exactly as a compile that skipped the memo."""
    from nutshell import training
    monkeypatch.setenv("NUTSHELL_CACHE", "0")
    x, y = np.arange(8, dtype=np.float32).reshape(2, 4) / 8, np.array([0, 1])
    start = {k: np.array(v) for k, v in _net().state_dict().items()}

    def trained(optimizer, clear=False, **options):
        if clear:
            training._OPTIMISED.clear()
        net = _net()
        net.load_state_dict(start)
        trainer = ns.compile_training(net, optimizer=optimizer, threads=1, **KW, **options)
        return [trainer.step(x, y) for _ in range(3)]

    trained(ns.optim.SGD(lr=0.1, momentum=0.9))
    for optimizer, options in ((ns.optim.SGD(lr=0.1, momentum=0.5), {}), (ns.optim.SGD(lr=0.1), {"l2": 0.1}),
                               (ns.optim.Adam(lr=0.01, betas=(0.5, 0.6)), {})):
        hit = trained(optimizer, **options)
        assert hit == trained(optimizer, clear=True, **options)


RANK_DEPENDENT = """
import sys
import numpy as np
import nutshell as ns
ns.distributed.set_timeout(30)
rank = ns.distributed.rank()
net = ns.nn.Sequential(ns.nn.Linear(4, 8), ns.nn.BatchNorm1d(8), ns.nn.Linear(8, 3))
rows = 4 if rank == 0 or sys.argv[1] != "batch" else 2
options = dict(bucket_cap_mb=1e-4 if rank == 0 else 25) if sys.argv[1] == "cap" else dict(sync_batchnorm=True)
try:
    ns.compile_training(net, input_shape=(rows, 4), example_targets=np.arange(rows) % 3, distributed="mpi",
                        **options)
except ns.CompileError as exc:
    print("refused:", exc)
    sys.exit(0)
sys.exit(5)
"""


@pytest.mark.parametrize("differs", ["cap", "batch"])
def test_ranks_that_disagree_on_the_step_are_refused_at_compile(tmp_path, differs):
    """bucket_cap_mb (or sync_batchnorm, or the model) differing between ranks would
    cut the gradients into buckets that do not match: a clear error on every rank at
    compile time, not a hang until the watchdog's abort (or a mixed-up sum)."""
    import os
    import subprocess
    import sys
    from test_distributed import HAVE_MPI, ROOT, _mpiexec
    if not HAVE_MPI:
        pytest.skip("MPI not installed")
    (tmp_path / "job.py").write_text(RANK_DEPENDENT)
    done = subprocess.run([_mpiexec(), "-n", "2", sys.executable, str(tmp_path / "job.py"), differs], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.stdout.count("refused:") == 2 and "bucket_cap_mb" in done.stdout


def test_cuda_model_export_refuses_cpu_options(tmp_path):
    model = ns.compile(_net(), input_shape=(2, 4), target="cuda-emulated")
    with pytest.raises(ns.CompileError, match="triple"):
        model.export(tmp_path / "a", triple="aarch64-linux-gnu")
    assert not (tmp_path / "a").exists()
    assert "ptx" in model.export(tmp_path / "b", name="m", target_cpu=None)


@pytest.mark.parametrize("variable, value", [("NUTSHELL_PART_INSTRUCTIONS", "x"), ("NUTSHELL_PART_INSTRUCTIONS", "0"),
                                             ("NUTSHELL_MPI_TIMEOUT", "soon"), ("NUTSHELL_MPI_TIMEOUT", "nan"),
                                             ("NUTSHELL_MPI_TIMEOUT", "-1")])
def test_bad_environment_values_are_named(variable, value):
    import os
    import subprocess
    import sys
    code = "import nutshell, nutshell.distributed"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, **{variable: value}))
    assert done.returncode != 0 and variable in done.stderr.splitlines()[-1], done.stderr[-500:]


def test_an_infinite_mpi_timeout_means_no_deadline():
    import nutshell.distributed as dist
    before = dist.timeout()
    try:
        dist.set_timeout(float("inf"))
        with dist.watched("a test block"):
            time.sleep(0.2)                  # the watchdog waits on the infinite deadline
        assert dist._watchdog.thread.is_alive()
        for bad in (0, -1, float("nan"), "x", None):
            with pytest.raises(ValueError, match="timeout"):
                dist.set_timeout(bad)
    finally:
        dist.set_timeout(before)


def test_driver_runner_frees_the_weights_when_an_upload_fails():
    from nutshell.compiler.cuda.model import build_gpu_model
    from nutshell.compiler.cuda.target import cuda_target
    from nutshell.runtime.cuda import optimize_for_gpu
    from nutshell.runtime.cuda_driver import CudaModel
    graph = optimize_for_gpu(ns.api.to_graph(ns.nn.Sequential(ns.nn.Linear(4, 3)), (2, 4)))
    code = build_gpu_model(graph, cuda_target("cuda"), "m")
    assert len(code.constants) >= 2
    fake = _AllocFailingDriver()
    fake.budget = 1                          # the first weight, then out of device memory
    with pytest.raises(ns.CompileError, match="cuMemAlloc"):
        CudaModel(graph, code, "ptx", cuda_target("cuda"), (fake, "ctx", "sm_90"))
    assert fake.live == {}


@pytest.mark.parametrize("op, shapes, outputs, order", [("LSTMCell", [(3, 20), (3, 5)], 3, 5),
                                                        ("LSTMCell", [(3, 20), (3, 5)], 3, None),
                                                        ("GRUCell", [(3, 15), (3, 15), (3, 5)], 2, 7)])
def test_cell_order_of_the_wrong_type(op, shapes, outputs, order):
    b = GraphBuilder("bad", fold=False)
    ins = [b.add_input(f"i{k}", "float32", s) for k, s in enumerate(shapes)]
    with pytest.raises(ns.ShapeError, match="order"):
        b.add_node(op, ins, {"order": order}, num_outputs=outputs)


def test_hostile_names_never_write_code_in_the_cuda_host_file(tmp_path):
    """BAD_INPUTS row 24 for --target cuda: value and graph names with quotes,
    backslashes, newlines and comment ends reach NAME.h and NAME_host.c only escaped."""
    import os
    import shutil
    import subprocess
    from nutshell.runtime.cuda import optimize_for_gpu
    from nutshell.runtime.cuda_aot import export_cuda
    cc, include = shutil.which("cc") or shutil.which("gcc"), "/usr/local/cuda/include"
    if cc is None or not os.path.exists(os.path.join(include, "cuda.h")):
        pytest.skip("needs a C compiler and cuda.h")
    evil = 'x"); system("id"); /*\\\n*/ #define'
    b = GraphBuilder('g"*/\n#include </etc/passwd>', fold=False)
    x = b.add_input(evil, "float32", (3,))
    b.set_outputs([b.add_node("Relu", [x], name=evil + "node")])
    written = export_cuda(optimize_for_gpu(b.build()), tmp_path, 'm"; int pwned;')
    name = os.path.basename(written["host"])[:-len("_host.c")]
    assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
    for path in (written["host"], written["header"]):
        text = open(path).read()
        assert "system(\"id\")" not in text and "#include </etc/passwd>" not in text
    r = subprocess.run([cc, "-std=c11", "-pedantic-errors", "-Werror", "-fsyntax-only", f"-I{include}",
                        f"-I{tmp_path}", written["host"]], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_an_arch_newer_than_the_gpu_is_refused_before_compiling(monkeypatch):
    from nutshell.runtime import cuda_driver
    monkeypatch.setattr(cuda_driver, "open_device", lambda index=0: (None, "ctx", "sm_80"))
    with pytest.raises(ns.CompileError, match="sm_80.*sm_90"):
        ns.compile(_net(), input_shape=(2, 4), target="cuda", arch="sm_90")


def test_training_memo_survives_concurrent_compiles(monkeypatch):
    """Several threads filling the optimised-graph memo past its 8 entries at once
    never see a KeyError (eviction raced lookups before the lock)."""
    import threading
    import nutshell.api
    import nutshell.runtime.model_cache as model_cache
    from nutshell import training
    monkeypatch.setattr(training, "_OPTIMISED", {})
    monkeypatch.setattr(model_cache, "graph_key", lambda graph, target, tag: graph)
    monkeypatch.setattr(nutshell.api, "optimize_graph", lambda graph: ("optimised", graph))
    errors = []

    def compile_many(offset):
        try:
            for i in range(200):
                assert training._optimised(offset * 1000 + i, "cpu") == ("optimised", offset * 1000 + i)
        except Exception as error:    # noqa: BLE001 - any failure is the finding
            errors.append(error)
    threads = [threading.Thread(target=compile_many, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(training._OPTIMISED) <= 8
