"""Whole compiled models on disk, keyed by the optimised graph (its text and every
constant's bytes), the full target description (CPU, features, threads, vector
width), the model's name, the compiler's own source and LLVM's version. A hit
skips lowering, LLVM and code generation: what is left is hashing the weights,
checking the object in a child process and linking it (NUTSHELL_CACHE=0 turns
it off). Entries are JSON metadata and raw bytes, never pickles."""
import functools
import hashlib
import json
import os
import struct

import numpy as np

from nutshell.compiler.codegen.model import ModelCode
from nutshell.compiler.lower.planner import Plan

from .jit import DiskCache, llvm_version
from .object_check import linked_here, object_links

FORMAT = "nutshell-model-2"


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
    for part in (str(graph), target.description(), name, llvm_version(), compiler_digest()):
        h.update(part.encode() + b"\0")
    for cname, array in graph.constants.items():
        array = np.ascontiguousarray(array)
        h.update(f"{cname}|{array.dtype.str}|{array.shape}".encode())
        h.update(array.tobytes() if array.size == 0 else memoryview(array).cast("B"))
    _hash_structure(h, graph)
    return h.hexdigest()


def _hash_structure(h, graph):
    """What str(graph) leaves ambiguous: names and string attributes unescaped, a
    tensor attribute (a Constant node before folding) only as its dtype and shape."""
    h.update(repr([(v.name, str(v.type)) for v in graph.inputs + graph.outputs]).encode())
    for node in graph.nodes:
        attrs = sorted(node.attrs.items())
        h.update(repr((node.op, node.inputs, node.outputs, [(k, v) for k, v in attrs
                                                           if not isinstance(v, np.ndarray)])).encode())
        for k, v in attrs:
            if isinstance(v, np.ndarray):
                v = np.ascontiguousarray(v)
                h.update(f"{k}|{v.dtype.str}|{v.shape}".encode() + v.tobytes())


def _plan_json(plan):
    return {"storage": [[name, kind, int(i)] for name, (kind, i) in plan.storage.items()],
            "scratch": [[int(k), [int(o) for o in v]] for k, v in plan.scratch.items()],
            "arena_size": int(plan.arena_size), "lower_bound": int(plan.lower_bound),
            "copies": sorted(int(c) for c in plan.copies), "elided": sorted(int(e) for e in plan.elided)}


def _plan_from_json(d):
    return Plan({name: (kind, int(i)) for name, kind, i in d["storage"]},
                {int(k): [int(o) for o in v] for k, v in d["scratch"]}, int(d["arena_size"]),
                int(d["lower_bound"]), {int(c) for c in d["copies"]}, {int(e) for e in d["elided"]})


def encode_entry(obj, code, tables):
    """JSON metadata, then the object's bytes (or each object's, of a split build),
    then each lookup table's bytes."""
    objects = [bytes(o) for o in (obj if isinstance(obj, list) else [obj])]
    tables = [np.ascontiguousarray(t) for t in tables]
    meta = {"format": FORMAT, "entry": code.entry, "num_calls": int(code.num_calls),
            "plan": _plan_json(code.plan), "object_bytes": [len(o) for o in objects],
            "tables": [{"dtype": t.dtype.str, "shape": list(t.shape)} for t in tables]}
    head = json.dumps(meta).encode()
    return b"".join([struct.pack("<Q", len(head)), head] + objects + [t.tobytes() for t in tables])


def decode_entry(payload):
    """(object bytes, or a list of them for a split build, metadata, tables); any
    inconsistency is a ValueError."""
    (size,) = struct.unpack_from("<Q", payload)
    meta = json.loads(payload[8:8 + size])
    if meta.get("format") != FORMAT or not meta["object_bytes"]:
        raise ValueError("another layout")
    at, objects = 8 + size, []
    for n in meta["object_bytes"]:
        objects.append(payload[at:at + int(n)])
        at += int(n)
    tables = []
    for t in meta["tables"]:
        dtype, shape = np.dtype(t["dtype"]), tuple(int(d) for d in t["shape"])
        if dtype.kind not in "biuf" or any(d < 0 for d in shape):    # numbers only, never objects
            raise ValueError("bad table")
        nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
        if at + nbytes > len(payload):
            raise ValueError("truncated")
        tables.append(np.frombuffer(payload, dtype, int(np.prod(shape, dtype=object)), at).reshape(shape).copy())
        at += nbytes
    if at != len(payload) or [len(o) for o in objects] != meta["object_bytes"]:
        raise ValueError("sizes disagree")
    return objects[0] if len(objects) == 1 else objects, meta, tables


class ModelCache(DiskCache):
    """One file per model: no pickle (a forged entry must not run code as it loads),
    a checksum over key and content, and an object that LLVM is shown only after a
    child process linked it; anything wrong is discarded and the model rebuilt."""

    def __init__(self, graph, target, name):
        super().__init__(graph_key(graph, target, name), ".model")
        self.target = target

    def load_code(self, graph, check=None):
        """(object bytes, ModelCode without IR or loop kernels), or None on a miss.
        `check`: an object_check.LinkCheck started earlier (its child is used or stopped)."""
        payload = self.load()
        if payload is None:
            if check is not None:
                check.close()
            return None
        try:
            obj, meta, tables = decode_entry(payload)
            code = ModelCode(None, str(meta["entry"]), list(graph.constants.values()) + tables,
                             _plan_from_json(meta["plan"]), None, int(meta["num_calls"]))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError, struct.error, OverflowError):
            if check is not None:
                check.close()
            self.discard()
            return None
        if not object_links(obj, self.target, check):
            self.discard()
            return None
        return obj, code

    def store_code(self, graph, code, obj):
        if obj is None:
            return
        linked_here(obj, self.target)
        self.store(encode_entry(obj, code, code.constants[len(graph.constants):]))


def cached_model(graph, target, name, check=None):
    """A CompiledModel of the optimised `graph`: linked from the cache when the same
    graph, constants and target were compiled before, else built and stored.
    Training steps use it as inference does: a training graph (forward, backward
    and update) is keyed the same way, its state being inputs, not constants.
    `check`: a LinkCheck started early, for the entry's object (stopped on a miss)."""
    from .jit import JitModule
    from .model import CompiledModel
    from .parallel_jit import build_and_jit
    cache = ModelCache(graph, target, name)
    hit = cache.load_code(graph, check)
    if hit is not None:
        return CompiledModel(graph, hit[1], JitModule.from_object(hit[0], target), target)
    code, jit = build_and_jit(graph, target, name)
    cache.store_code(graph, code, jit.object)
    return CompiledModel(graph, code, jit, target)
