"""Verify, optimise (O3, new pass manager) and JIT-compile an LLVM module, with an
on-disk cache of the machine code keyed by the IR and the CPU (NUTSHELL_CACHE=0
turns it off; NUTSHELL_CACHE_DIR moves it). runtime/model_cache.py keys whole
compiled models by their graph, so a hit skips lowering too."""
import atexit
import ctypes
import hashlib
import os
import tempfile
import threading

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from nutshell.compiler.codegen import thread_pool
from nutshell.compiler.errors import CompileError
from nutshell.compiler.lower.target import _init_llvm, optimize

from .object_check import object_links


def target_machine(target, opt=3, reloc="default", codemodel="jitdefault"):
    _init_llvm()
    try:
        t = llvm.Target.from_triple(target.triple)
    except RuntimeError as exc:
        raise CompileError(f"no LLVM target for triple {target.triple}: {exc}") from None
    return t.create_target_machine(cpu=target.cpu, features=target.features, opt=opt,
                                   reloc=reloc, codemodel=codemodel)


def cache_root():
    return os.environ.get("NUTSHELL_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "nutshell")


def cache_enabled():
    return os.environ.get("NUTSHELL_CACHE", "1") != "0"


class DiskCache:
    """One checksummed file per key under the cache root; a damaged file reads as a
    miss, writes are atomic (readers see all or nothing), a read-only home just
    means no cache."""

    def __init__(self, key, suffix):
        self.enabled = cache_enabled()
        self.key = key
        self.path = os.path.join(cache_root(), key[:2], key + suffix)

    def _digest(self, payload):
        """Over the key too: an entry copied to another key's file is not valid there."""
        return hashlib.sha256(self.key.encode() + b"\0" + payload).digest()

    def load(self):
        if not self.enabled:
            return None
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except OSError:
            return None
        digest, payload = data[:32], data[32:]
        return payload if self._digest(payload) == digest else None

    def discard(self):
        try:
            os.unlink(self.path)
        except OSError:
            pass

    def store(self, payload):
        if not self.enabled:
            return
        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=os.path.dirname(self.path))
            with os.fdopen(fd, "wb") as f:
                f.write(self._digest(payload) + payload)
            os.replace(tmp, self.path)
        except OSError:
            pass


def llvm_version():
    return f"{llvmlite.__version__}|{'.'.join(map(str, llvm.llvm_version_info))}"


class ObjectCache(DiskCache):
    """Compiled objects keyed by the IR, the target and the LLVM version."""

    def __init__(self, llvm_ir, target):
        key = hashlib.sha256("|".join([llvm_ir, target.description(), llvm_version()]).encode()).hexdigest()
        super().__init__(key, ".o")
        self.target = target

    def load(self):
        """The object, if LLVM can link it (tried in a child first); a bad one is discarded."""
        obj = super().load()
        if obj is not None and not object_links(obj, self.target):
            self.discard()
            return None
        return obj


_POOL = []                       # (engine, stop): the process's thread pool, built once
_POOL_LOCK = threading.Lock()


def ensure_pool():
    """Compile the thread pool once per process and publish `nutshell_parallel` to the
    JIT linker: every model shares its workers. Its engine lives as long as the process;
    at exit the workers are stopped before anything is torn down under them."""
    with _POOL_LOCK:
        if _POOL:
            return
        _init_llvm()
        module = ir.Module(name="nutshell_pool")
        module.triple = llvm.get_process_triple()
        thread_pool.define(module, module.triple, linkage="external", destructor=False)
        tm = llvm.Target.from_triple(module.triple).create_target_machine(opt=2)
        mod = llvm.parse_assembly(str(module))
        mod.verify()
        engine = llvm.create_mcjit_compiler(mod, tm)
        engine.finalize_object()
        for name in (thread_pool.ENTRY, thread_pool.HOLD, thread_pool.RELEASE):
            llvm.add_symbol(name, engine.get_function_address(name))
        stop = ctypes.CFUNCTYPE(None)(engine.get_function_address(thread_pool.STOP))
        atexit.register(stop)
        _POOL.append((engine, stop))


class JitModule:
    """Holds an MCJIT engine alive and hands out function addresses."""

    def __init__(self, llvm_ir, target):
        ensure_pool()
        self.tm = target_machine(target)
        self.llvm_ir = llvm_ir
        self.cache = ObjectCache(llvm_ir, target)
        cached = self.cache.load()
        self.from_cache = cached is not None
        if cached is not None:                  # the object is ready: skip O3 and codegen
            self.module = llvm.parse_assembly(llvm_ir)
            self.module.triple = self.tm.triple
            self.module.data_layout = str(self.tm.target_data)
        else:
            self.module = optimize(llvm_ir, self.tm)
        self.object = cached
        self.engine = llvm.create_mcjit_compiler(self.module, self.tm)
        self.engine.set_object_cache(self._compiled, lambda module: cached)
        self.engine.finalize_object()
        self.engine.run_static_constructors()

    def _compiled(self, module, buffer):
        self.object = bytes(buffer)
        self.cache.store(self.object)

    @classmethod
    def from_object(cls, obj, target):
        """Machine code from a cache: an empty module plus the object (or the objects
        of a split build), no IR at all."""
        ensure_pool()
        self = cls.__new__(cls)
        self.tm, self.llvm_ir, self.object, self.from_cache = target_machine(target), None, obj, True
        self.module = llvm.parse_assembly("")
        self.module.triple = self.tm.triple
        self.engine = llvm.create_mcjit_compiler(self.module, self.tm)
        for one in obj if isinstance(obj, list) else [obj]:
            self.engine.add_object_file(llvm.ObjectFileRef.from_data(one))
        self.engine.finalize_object()
        self.engine.run_static_constructors()
        return self

    def address(self, name):
        addr = self.engine.get_function_address(name)
        if not addr:
            raise CompileError(f"function {name} not found in the compiled module")
        return addr

    def _optimized(self):
        """The optimised module(s): one per part of a split build (parallel_jit.py)."""
        if getattr(self, "parts", None) and self.llvm_ir is None:
            return [optimize(part, self.tm) for part in self.parts]
        return [optimize(self.llvm_ir, self.tm) if self.from_cache else self.module]

    def optimized_ir(self):
        return "\n".join(str(m) for m in self._optimized())

    def assembly(self):
        return "\n".join(self.tm.emit_assembly(m) for m in self._optimized())
