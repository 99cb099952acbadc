"""CompiledModel: a JIT-compiled graph callable from Python without copies."""
import ctypes
import threading

import numpy as np

from nutshell.compiler.errors import InputError
from nutshell.compiler.lower.planner import ALIGN


def aligned_empty(nbytes, align=ALIGN):
    """A uint8 array of `nbytes` whose data starts on an `align`-byte boundary."""
    raw = np.empty(nbytes + align, dtype=np.uint8)
    start = (-raw.ctypes.data) % align
    return raw[start:start + nbytes]


def _pointer_array(arrays):
    return (ctypes.c_void_p * max(len(arrays), 1))(*[a.ctypes.data for a in arrays])


class CompiledModel:
    """The result of `ns.compile`: `run(feeds)` like ONNX Runtime, `model(x)` for
    one input, `source(kind)` for the generated code, `export(dir)` for AOT."""

    def __init__(self, graph, code, jit, target):
        self.graph, self.code, self.jit, self.target = graph, code, jit, target
        self.inputs = list(graph.inputs)
        self.outputs = list(graph.outputs)
        self._consts = [np.ascontiguousarray(c) for c in code.constants]
        self._const_ptrs = _pointer_array(self._consts)
        proto = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p,
                                 ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32)
        self._fn = proto(jit.address(code.entry))
        self._local = threading.local()    # one workspace per calling thread

    @property
    def arena_size(self):
        return self.code.plan.arena_size

    def _workspace(self):
        ws = getattr(self._local, "ws", None)
        if ws is None:
            ws = self._local.ws = aligned_empty(max(self.arena_size, ALIGN))
        return ws

    def _check(self, feeds):
        if not isinstance(feeds, dict):
            raise InputError(f"run() takes a dict of input name -> array, got {type(feeds).__name__}")
        expected = [v.name for v in self.inputs]
        unknown = sorted(set(feeds) - set(expected))
        missing = [n for n in expected if n not in feeds]
        if unknown or missing:
            raise InputError(f"expected inputs {expected}; missing {missing}, unknown {unknown}")
        arrays = []
        for v in self.inputs:
            x = feeds[v.name]
            if not isinstance(x, np.ndarray):
                x = np.asarray(x)
            want = v.type
            if x.dtype != want.dtype.numpy or tuple(x.shape) != want.shape:
                raise InputError(f"input '{v.name}': expected {want.shape} {want.dtype.value}, "
                                 f"got {tuple(x.shape)} {x.dtype}")
            arrays.append(np.ascontiguousarray(x))   # a strided view is copied, never misread
        return arrays

    def run(self, feeds, output_names=None):
        """Run on `feeds` (name -> array); returns name -> array for every output."""
        arrays = self._check(feeds)
        outs = [np.empty(v.type.shape, dtype=v.type.dtype.numpy) for v in self.outputs]
        in_ptrs, out_ptrs = _pointer_array(arrays), _pointer_array(outs)   # kept alive here
        self.call(in_ptrs, out_ptrs)
        result = {v.name: o for v, o in zip(self.outputs, outs)}
        return result if output_names is None else {n: result[n] for n in output_names}

    def call(self, in_ptrs, out_ptrs):
        """The native call itself: ctypes arrays of input and output pointers."""
        code = self._fn(ctypes.addressof(in_ptrs), ctypes.addressof(out_ptrs),
                        self._workspace().ctypes.data, ctypes.addressof(self._const_ptrs),
                        self.target.threads)
        if code != 0:
            from nutshell.compiler.codegen.aot import ERRORS
            raise InputError(f"run-time check failed: {ERRORS.get(code, f'error code {code}')}")

    def __call__(self, *xs):
        if len(xs) != len(self.inputs):
            raise InputError(f"model takes {len(self.inputs)} input(s), got {len(xs)}")
        outs = self.run({v.name: x for v, x in zip(self.inputs, xs)})
        values = [outs[v.name] for v in self.outputs]
        return values[0] if len(values) == 1 else tuple(values)

    def export(self, out_dir, name=None, target_cpu=None, triple=None):
        """Ahead of time: write OUT_DIR/NAME.h, NAME.o and libNAME.so (see DESIGN's C ABI).
        target_cpu ('x86-64-v3', 'znver4', ...) and triple ('aarch64-linux-gnu') emit
        for another machine (the .so is linked for the host only)."""
        from nutshell.compiler.codegen.c_header import c_identifier
        from nutshell.runtime.aot import export_inference
        return export_inference(self.graph, out_dir, c_identifier(name or self.graph.name),
                                self.target.threads, target_cpu, triple)

    def lowered(self):
        """The full ModelCode (IR, loop kernels): a model from the graph cache has only
        its machine code, so it is lowered again here, on request."""
        if self.code.llvm_ir is None:
            from nutshell.compiler.codegen.model import build_model
            self.code = build_model(self.graph, self.target, self.code.entry[:-len("_run")])
            self.jit.llvm_ir = self.code.llvm_ir
        return self.code

    def source(self, kind="llvm"):
        """'llvm': the generated LLVM IR; 'optimized': after O3; 'asm': machine code;
        'loops': the loop IR; 'graph': the compiled graph's text form."""
        if kind in ("llvm", "optimized", "asm", "loops"):
            self.lowered()
        if kind == "llvm":
            return self.code.llvm_ir
        if kind == "optimized":
            return self.jit.optimized_ir()
        if kind == "asm":
            return self.jit.assembly()
        if kind == "loops":
            from nutshell.compiler.lower.loop_printer import print_kernel
            return "\n\n".join(print_kernel(k) for k in self.code.kernels)
        if kind == "graph":
            return str(self.graph)
        raise ValueError(f"unknown source kind '{kind}' (llvm, optimized, asm, loops, graph)")
