"""Whole compiled models on disk, keyed by the optimised graph (its text and every
constant's bytes), the target, the model's name, the compiler's own source and
LLVM's version. A hit skips lowering, LLVM and code generation: what is left is
hashing the weights and linking the object (NUTSHELL_CACHE=0 turns it off)."""
import functools
import hashlib
import os
import pickle

import numpy as np

from nutshell.compiler.codegen.model import ModelCode

from .jit import DiskCache, llvm_version


@functools.lru_cache(maxsize=None)
def compiler_digest():
    """A hash of the compiler's and runtime's source: an edited compiler never
    reuses code an older one generated."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for sub in ("compiler", "runtime"):
        for dirpath, dirs, files in os.walk(os.path.join(root, sub)):
            dirs.sort()
            for f in sorted(files):
                if f.endswith(".py"):
                    h.update(f.encode())
                    with open(os.path.join(dirpath, f), "rb") as fh:
                        h.update(fh.read())
    return h.hexdigest()


def graph_key(graph, target, name):
    h = hashlib.sha256()
    for part in (str(graph), target.key(), name, llvm_version(), compiler_digest()):
        h.update(part.encode() + b"\0")
    for cname, array in graph.constants.items():
        array = np.ascontiguousarray(array)
        h.update(f"{cname}|{array.dtype.str}|{array.shape}".encode())
        h.update(array.tobytes() if array.size == 0 else memoryview(array).cast("B"))
    return h.hexdigest()


class ModelCache(DiskCache):
    def __init__(self, graph, target, name):
        super().__init__(graph_key(graph, target, name), ".model")

    def load_code(self, graph):
        """(object bytes, ModelCode without IR or loop kernels), or None on a miss."""
        payload = self.load()
        if payload is None:
            return None
        try:
            entry = pickle.loads(payload)     # our own checksummed file, see DiskCache
            code = ModelCode(None, entry["entry"], list(graph.constants.values()) + entry["tables"],
                             entry["plan"], None, entry["num_calls"])
            return entry["object"], code
        except Exception:                      # an older layout reads as a miss
            return None

    def store_code(self, graph, code, obj):
        if obj is None:
            return
        self.store(pickle.dumps(dict(object=obj, entry=code.entry, plan=code.plan,
                                     tables=code.constants[len(graph.constants):],
                                     num_calls=code.num_calls), protocol=pickle.HIGHEST_PROTOCOL))
