"""JIT-compile a large model on every core: build_model seals its kernels into
parts as it emits them (compiler/codegen/model.py), and each sealed part is
optimised and compiled to an object by a child process while the parent goes on
emitting the rest (llvmlite serialises every LLVM call in one process, so threads
would not help). The parent compiles the last part, the one with the entry, and
links the children's objects into one engine. A small model is one part and never
starts a child.

Each child runs the same O3 pipeline on the same IR, and MCJIT hands it the same
object as in the parent: the machine code does not depend on where it was made. A
child that fails (or cannot start) leaves its part to the parent, which then
reports the error as an in-process compile would."""
import contextlib
import gc
import os
import queue
import struct
import subprocess
import sys
import threading

import llvmlite.binding as llvm

_CHILD = r"""
import struct, sys
import llvmlite.binding as llvm
llvm.initialize_native_target()
llvm.initialize_native_asmprinter()
triple, cpu, features = sys.argv[1:4]
target = llvm.Target.from_triple(triple)
read, write = sys.stdin.buffer.read, sys.stdout.buffer.write
while True:
    head = read(8)
    if len(head) < 8:
        break
    # a machine per part: the engine owns it and frees it with the part's engine (reusing
    # one made every second part segfault, and the parent compile it alone)
    tm = target.create_target_machine(cpu=cpu, features=features, opt=3, reloc="default",
                                      codemodel="jitdefault")
    mod = llvm.parse_assembly(read(struct.unpack("<Q", head)[0]).decode())
    mod.verify()
    mod.triple, mod.data_layout = tm.triple, str(tm.target_data)
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = pto.slp_vectorization = True
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    for fn in mod.functions:          # other parts' kernels, the thread pool: linked, never run here
        if fn.is_declaration and not fn.name.startswith("llvm."):
            llvm.add_symbol(fn.name, 1)
    objects = []
    engine = llvm.create_mcjit_compiler(mod, tm)
    engine.set_object_cache(lambda module, buffer: objects.append(bytes(buffer)), lambda module: None)
    engine.finalize_object()
    write(struct.pack("<Q", len(objects[0])) + objects[0])
    sys.stdout.flush()
"""
PART_SECONDS = 600
MAX_CHILDREN = 8
MAX_OBJECT_BYTES = 1 << 32


class PartCompiler:
    """Children (one per part, up to one per core) that turn IR parts into objects;
    `objects()` waits for them all: each part's object, or None where a child failed."""

    def __init__(self, target):
        self.target = target
        self.parts, self.results = [], {}
        self.queue = queue.Queue()
        self.threads = []

    def submit(self, text):
        index = len(self.parts)
        self.parts.append(text)
        if len(self.threads) < min(os.cpu_count() or 1, MAX_CHILDREN):     # a child per part, up to a core each
            self.threads.append(threading.Thread(target=self._serve, daemon=True))
            self.threads[-1].start()
        self.queue.put(index)

    def _serve(self):
        t = self.target
        try:
            child = subprocess.Popen([sys.executable, "-c", _CHILD, t.triple, t.cpu, t.features],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL)
        except OSError:
            child = None
        while True:
            index = self.queue.get()
            if index is None:
                break
            self.results[index] = self._compile(child, index)
            if self.results[index] is None:
                child = None         # it died: the parent compiles the rest of this share
        if child is not None:
            child.stdin.close()
            child.wait()

    def _compile(self, child, index):
        if child is None:
            return None
        watchdog = threading.Timer(PART_SECONDS, child.kill)   # a hung child: the parent does it
        watchdog.start()
        try:
            data = self.parts[index].encode()
            child.stdin.write(struct.pack("<Q", len(data)) + data)
            child.stdin.flush()
            head = child.stdout.read(8)
            if len(head) < 8:
                raise OSError("child died")
            size = struct.unpack("<Q", head)[0]
            if size > MAX_OBJECT_BYTES:      # a garbled header: never allocate what it claims
                raise OSError("garbled object size")
            obj = child.stdout.read(size)
            if len(obj) != size:         # died mid-object: a truncated ELF must not reach LLVM
                raise OSError("child died")
            return obj if obj[:4] == b"\x7fELF" else None
        except (OSError, ValueError, struct.error):
            child.kill()
            child.wait()
            return None
        finally:
            watchdog.cancel()

    def objects(self):
        """[(object bytes or None, IR text)] for every part submitted, in order."""
        for _ in self.threads:
            self.queue.put(None)
        for t in self.threads:
            t.join()
        return [(self.results.get(i), text) for i, text in enumerate(self.parts)]


def jit_parts(code, compiler, target):
    """A JitModule of a split build: the last part compiled here, the others' objects
    (compiled here too when their child failed) linked alongside."""
    from nutshell.compiler.lower.target import optimize
    from .jit import JitModule, ensure_pool, target_machine
    ensure_pool()
    self = JitModule.__new__(JitModule)
    self.tm, self.llvm_ir, self.parts, self.from_cache = target_machine(target), None, code.parts, True
    self.module = optimize(code.parts[-1], self.tm)
    self.engine = llvm.create_mcjit_compiler(self.module, self.tm)
    objects = []
    for obj, text in compiler.objects():
        if obj is None:
            self.engine.add_module(optimize(text, self.tm))
        else:
            objects.append(obj)
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(obj))
    self.engine.set_object_cache(lambda module, buffer: objects.append(bytes(buffer)), lambda module: None)
    self.engine.finalize_object()
    self.engine.run_static_constructors()
    self.object = objects
    return self


_PAUSED = {"depth": 0, "was_enabled": False}
_PAUSED_LOCK = threading.Lock()


@contextlib.contextmanager
def collector_paused():
    """Python's cyclic garbage collector off while a model is emitted: the IR being
    built is hundreds of thousands of live llvmlite objects that each collection
    walked again, finding no garbage (ResNet-18's step: 40% of its emission time).
    Compiles in several threads: it is back on when the last one ends, and only if
    it was on before the first began."""
    with _PAUSED_LOCK:
        if _PAUSED["depth"] == 0:
            _PAUSED["was_enabled"] = gc.isenabled()
            gc.disable()
        _PAUSED["depth"] += 1
    try:
        yield
    finally:
        with _PAUSED_LOCK:
            _PAUSED["depth"] -= 1
            if _PAUSED["depth"] == 0 and _PAUSED["was_enabled"]:
                gc.enable()


def build_and_jit(graph, target, name):
    """(ModelCode, JitModule) of the optimised `graph`, its parts compiled in parallel."""
    from nutshell.compiler.codegen.model import build_model
    from .jit import JitModule
    compiler = PartCompiler(target)
    try:
        with collector_paused():
            code = build_model(graph, target, name, on_part=compiler.submit)
    except BaseException:
        compiler.objects()           # stops the children before the error goes on
        raise
    if code.parts:
        return code, jit_parts(code, compiler, target)
    return code, JitModule(code.llvm_ir, target)
