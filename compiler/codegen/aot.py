"""Ahead-of-time bundles: the model's kernels and entry point, its weights as
read-only data, and C entry points that check their arguments, in one object.

    int  NAME_run(const float *const *inputs, float *const *outputs, void *workspace);
    int  NAME_run_threads(..., int num_threads);
    const char *NAME_error_string(int code);

No global mutable state: one library serves many threads, each with its own
workspace."""
from llvmlite import ir

from . import llvm_helpers as H

ERRORS = {0: "ok", 1: "a NULL pointer argument", 2: "a misaligned pointer argument (workspace: 64 "
          "bytes, tensors: their element size)", 3: "the thread count must be at least 1",
          4: "the state is not one NAME_init_state filled, or is corrupted (call NAME_init_state)",
          5: "a label is outside [0, number of classes)", 6: "no parameter has that index",
          7: "an index is out of range (Gather)"}
WORKSPACE_ALIGN = 64


def add_constants(module, name, constants):
    """Weights as internal read-only globals, and the table of their addresses."""
    ptrs = []
    for j, array in enumerate(constants):
        data = bytearray(array.tobytes()) or bytearray(1)
        gv = ir.GlobalVariable(module, ir.ArrayType(H.I8, len(data)), name=f"{name}_w{j}")
        gv.global_constant, gv.linkage, gv.align = True, "internal", 64
        gv.initializer = ir.Constant(ir.ArrayType(H.I8, len(data)), data)
        ptrs.append(gv)
    table = ir.GlobalVariable(module, ir.ArrayType(H.PTR, max(1, len(ptrs))), name=f"{name}_consts")
    table.global_constant, table.linkage = True, "internal"
    table.initializer = ir.Constant(ir.ArrayType(H.PTR, max(1, len(ptrs))),
                                    ptrs or [ir.Constant(H.PTR, None)])
    return table


class Checks:
    """Argument checks that return an error code from the function being built."""

    def __init__(self, builder, fn):
        self.b, self.fn = builder, fn

    def fail_if(self, cond, code):
        ok = self.fn.append_basic_block("ok")
        bad = self.fn.append_basic_block("bad")
        self.b.cbranch(cond, bad, ok)
        self.b.position_at_end(bad)
        self.b.ret(ir.Constant(H.I32, code))
        self.b.position_at_end(ok)

    def null(self, ptr):
        self.fail_if(self.b.icmp_unsigned("==", self.b.ptrtoint(ptr, H.I64), ir.Constant(H.I64, 0)), 1)

    def aligned(self, ptr, align):
        low = self.b.and_(self.b.ptrtoint(ptr, H.I64), ir.Constant(H.I64, align - 1))
        self.fail_if(self.b.icmp_unsigned("!=", low, ir.Constant(H.I64, 0)), 2)

    def pointer_array(self, array, count, aligns):
        """array != NULL and each of its `count` entries non-NULL and aligned."""
        self.null(array)
        for i in range(count):
            p = self.b.load(self.b.gep(array, [ir.Constant(H.I64, i)], source_etype=H.PTR), typ=H.PTR)
            self.null(p)
            self.aligned(p, aligns[i])

    def threads(self, n):
        self.fail_if(self.b.icmp_signed("<", n, ir.Constant(H.I32, 1)), 3)


def add_inference_api(module, name, code, graph, default_threads):
    """NAME_run / NAME_run_threads / NAME_error_string around the entry point."""
    table = add_constants(module, name, code.constants)
    entry = module.get_global(code.entry)
    run_t = ir.Function(module, ir.FunctionType(H.I32, [H.PTR, H.PTR, H.PTR, H.I32]), name=f"{name}_run_threads")
    inputs, outputs, workspace, threads = run_t.args
    b = ir.IRBuilder(run_t.append_basic_block("entry"))
    check = Checks(b, run_t)
    check.pointer_array(inputs, len(graph.inputs), [v.type.dtype.itemsize for v in graph.inputs])
    check.pointer_array(outputs, len(graph.outputs), [v.type.dtype.itemsize for v in graph.outputs])
    check.null(workspace)
    check.aligned(workspace, WORKSPACE_ALIGN)
    check.threads(threads)
    b.ret(b.call(entry, [inputs, outputs, workspace, table, threads]))
    run = ir.Function(module, ir.FunctionType(H.I32, [H.PTR, H.PTR, H.PTR]), name=f"{name}_run")
    b = ir.IRBuilder(run.append_basic_block("entry"))
    b.ret(b.call(run_t, list(run.args) + [ir.Constant(H.I32, default_threads)]))
    add_error_strings(module, name)


def add_error_strings(module, name, extra=()):
    """NAME_error_string(code): ERRORS' texts, plus `extra` (code, text) pairs of a backend."""
    fn = ir.Function(module, ir.FunctionType(H.PTR, [H.I32]), name=f"{name}_error_string")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    strings = {}
    for code, text in list(ERRORS.items()) + list(extra) + [(-1, "unknown error code")]:
        data = bytearray(text.replace("NAME", name).encode() + b"\0")
        gv = ir.GlobalVariable(module, ir.ArrayType(H.I8, len(data)), name=f"{name}_err{code}".replace("-", "m"))
        gv.global_constant, gv.linkage = True, "internal"
        gv.initializer = ir.Constant(ir.ArrayType(H.I8, len(data)), data)
        strings[code] = gv
    default = fn.append_basic_block("unknown")
    switch = b.switch(fn.args[0], default)
    for code, gv in strings.items():
        if code < 0:
            continue
        block = fn.append_basic_block(f"code{code}")
        switch.add_case(ir.Constant(H.I32, code), block)
        ir.IRBuilder(block).ret(gv)
    ir.IRBuilder(default).ret(strings[-1])
