"""Assemble a whole model: one kernel per node (deduplicated by signature), the
memory plan, and the entry point

    int32 NAME_run(ptr *inputs, ptr *outputs, ptr workspace, ptr *consts, i32 threads)

that calls the kernels in order with pointers into the caller's buffers, the
weights and the arena."""
import hashlib
import os
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ..errors import CompileError, ShapeError, UnsupportedOpError
from ..lower.context import LowerContext
from ..lower.planner import plan_memory
from ..ops import get_op
from ..ops.shape_ops import copy_lower
from ..schedule.kernels import schedule_kernel
from ..schedule.tables import table_for
from . import llvm_helpers as H
from . import thread_pool
from .kernel_emitter import KernelEmitter


@dataclass
class ModelCode:
    llvm_ir: str
    entry: str
    constants: list          # arrays in `consts` slot order (weights, then lookup tables)
    plan: object
    kernels: list            # loop-IR kernels, for source("loops")
    num_calls: int
    module: object = None    # the llvmlite ir.Module (AOT adds its C entry points to it)
    parts: list = None       # IR of each separately compiled module, the entry's last (a split build)


def _signature(node, in_types, out_types, consts, target):
    h = hashlib.sha1()
    h.update(repr((node.op, sorted((k, repr(v)) for k, v in node.attrs.items()),
                   [str(t) for t in in_types], [str(t) for t in out_types], target.description())).encode())
    for c in consts:     # integer constants (shapes, axes, sizes) can change the loops
        if c is not None and not np.issubdtype(c.dtype, np.floating):
            h.update(c.tobytes())
        elif c is not None and c.size <= 8:
            h.update(c.tobytes())
    return h.hexdigest()[:16]


MEMORY_BUDGET = int(os.environ.get("NUTSHELL_MEMORY_BUDGET", 16 << 30))   # bytes for one value


def check_memory(graph):
    """A value larger than the budget (a hostile Expand or Tile) is a clean error."""
    for node in graph.nodes:
        for out in node.outputs:
            if out and graph.types[out].nbytes > MEMORY_BUDGET:
                raise ShapeError(f"node '{node.name}' ({node.op}) would produce {graph.types[out].nbytes:,} "
                                 f"bytes, over the memory budget of {MEMORY_BUDGET:,} "
                                 "(NUTSHELL_MEMORY_BUDGET)")


def _is_alias(op):
    return get_op(op).alias


@dataclass
class LoweredNode:
    idx: int                 # the node's index in graph.nodes
    signature: str           # equal signatures share one kernel
    first: bool              # the first node of its signature: its kernel is to be emitted
    ctx: LowerContext        # the lowering's kernel, scratch buffers, tables, status word
    table_slots: list        # `consts` slots of the lookup tables the lowering made
    scratch_sizes: list      # bytes of each scratch buffer
    kernel: object = None    # first only: the kernel, scheduled for the target (schedule_kernel)


def lower_nodes(graph, target, name, const_index, constants, lowering_of=lambda op, default: default):
    """Lower, in order, every node that needs code (views the planner keeps as
    aliases and elided nodes need none), naming kernels `name`_kN_op by distinct
    signature. Lookup tables a lowering makes are appended to `constants`.
    `lowering_of(op, registered)` picks the lowering (the GPU swaps some); the CPU
    and CUDA model builders share this walk."""
    first_plan = plan_memory(graph, {}, const_index, _is_alias)
    seen = set()
    for idx, node in enumerate(graph.nodes):
        opdef = get_op(node.op)
        if (opdef.alias and idx not in first_plan.copies) or idx in first_plan.elided:
            continue
        lower = copy_lower if opdef.alias else lowering_of(node.op, opdef.lower)
        if lower is None:
            raise UnsupportedOpError(node.op, node=node.name,
                                     detail="no code generation (its inputs are not constant)")
        in_types = [graph.types[i] if i else None for i in node.inputs]
        out_types = [graph.types[o] for o in node.outputs if o]
        consts = [graph.constants.get(i) if i else None for i in node.inputs]
        sig = _signature(node, in_types, out_types, consts, target)
        variant = opdef.variant(node, in_types, consts, target) if opdef.variant else None   # the variant step
        ctx = LowerContext(node, in_types, out_types, consts, target,
                           f"{name}_k{len(seen)}_{node.op.lower()}", variant)
        lower(ctx)        # the algorithm: a loop nest whose loops are serial or candidates
        kernel = schedule_kernel(ctx.algorithm(), target) if sig not in seen else None   # parallel loops chosen
        table_slots = list(range(len(constants), len(constants) + len(ctx.tables)))
        constants.extend(array for _, array in ctx.tables)
        yield LoweredNode(idx, sig, sig not in seen, ctx, table_slots,
                          [b.size * b.dtype.itemsize for b in ctx.scratch_buffers], kernel)
        seen.add(sig)


def build_model(graph, target, name="model", module=None, on_part=None):
    """Lower, plan and emit `graph` into `module` (a new one by default); kernels and
    the entry point are prefixed with `name`, so several graphs can share a module.
    With `on_part` (a large model JIT-compiled in a new module), each PART_BUDGET
    instructions of kernels are sealed into a module of their own, handed to
    on_part(IR text) as soon as they are emitted: LLVM compiles them while the
    rest is still being emitted (runtime/parallel_jit.py)."""
    check_memory(graph)
    const_names = list(graph.constants)
    constants = [graph.constants[n] for n in const_names]
    const_index = {n: j for j, n in enumerate(const_names)}
    parts = ModuleParts(module, target, name, on_part)
    lowered, calls, scratch_sizes, by_sig = [], [], {}, {}
    for node in lower_nodes(graph, target, name, const_index, constants):
        if node.first:
            kernel = by_sig[node.signature] = node.kernel
            lowered.append(kernel)
            parts.add(KernelEmitter(parts.module, kernel, target.threads, parts,
                                    table_for(target).masked_stores_slow).emit())
        scratch_sizes[node.idx] = node.scratch_sizes
        calls.append((node.idx, by_sig[node.signature].name, node.table_slots, node.ctx.status_buffer is not None))

    plan = plan_memory(graph, scratch_sizes, const_index, _is_alias)
    entry = f"{name}_run"
    module = parts.module
    _emit_entry(module, entry, graph, plan, calls, parts.kernel)
    if not parts.sealed:
        return ModelCode(str(module), entry, constants, plan, lowered, len(calls), module)
    texts = parts.sealed + [str(module)]
    return ModelCode("\n".join(texts), entry, constants, plan, lowered, len(calls), None, texts)


def _part_budget(text):
    """NUTSHELL_PART_INSTRUCTIONS, checked: a bad value was a bare ValueError out of `import nutshell`."""
    if not text.strip().isdigit() or int(text) < 1:
        raise CompileError(f"NUTSHELL_PART_INSTRUCTIONS must be a positive count of LLVM IR instructions, "
                           f"got {text!r}")
    return int(text)


PART_BUDGET = _part_budget(os.environ.get("NUTSHELL_PART_INSTRUCTIONS", "10000"))   # LLVM IR instructions:
# smaller parts start the children sooner and leave the parent a smaller last part (ResNet-18
# step: 20k -> 10k took the parent 4.6 -> 3.4 s CPU, the total unchanged)


class ModuleParts:
    """The module kernels are emitted into: one (the caller's, or a new one), or,
    given `on_part`, a new one after every PART_BUDGET instructions, the full one
    sealed (its kernels made external, for the entry to call) and handed on."""

    def __init__(self, module, target, name, on_part):
        self.target, self.name, self.on_part = target, name, on_part
        self.module = module if module is not None else self._new()
        self.module.vector_bits = target.vector_bits     # vector_math's x86 intrinsics ask
        self.size, self.sealed, self.kernels = 0, [], {}
        self.workers = {}        # structure key -> name of the parallel worker emitted for it

    def _new(self):
        done = len(getattr(self, "sealed", ()))
        module = ir.Module(name=f"{self.name}_part{done}" if done else self.name)
        module.triple = self.target.triple
        module.vector_bits = self.target.vector_bits
        return module

    def add(self, fn):
        """After a kernel (and its outlined workers) was emitted."""
        self.kernels[fn.name] = fn
        if self.on_part is None:
            return
        self.size += sum(len(block.instructions) for f in self.module.functions
                         if f.name.startswith(fn.name) for block in f.blocks)
        if self.size >= PART_BUDGET:
            for f in self.module.functions:
                if f.name in self.kernels:
                    f.linkage = ""
            self.sealed.append(str(self.module))
            self.on_part(self.sealed[-1])
            self.module, self.size = self._new(), 0

    def find_worker(self, module, key):
        """The worker emitted for `key` (a declaration when it is in a sealed part), or None."""
        name = self.workers.get(key)
        return None if name is None else self.kernel(module, name)

    def add_worker(self, key, fn):
        """A worker others may call: external when its part is sealed, as kernels are."""
        self.workers[key] = fn.name
        self.kernels[fn.name] = fn

    def kernel(self, module, name):
        """Kernel `name` as `module` sees it: a declaration when emitted elsewhere."""
        fn = module.globals.get(name)
        if fn is None:
            fn = ir.Function(module, self.kernels[name].ftype, name=name)
        return fn


def _emit_entry(module, entry, graph, plan, calls, kernel_of):
    fn = ir.Function(module, ir.FunctionType(H.I32, [H.PTR] * 4 + [H.I32]), name=entry)
    fn.attributes.add("nounwind")
    inputs, outputs, workspace, consts, threads = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    slots = {"input": inputs, "output": outputs, "const": consts}

    def pointer(kind, where):
        if kind == "arena":
            return b.gep(workspace, [ir.Constant(H.I64, where)], source_etype=H.I8)
        slot = b.gep(slots[kind], [ir.Constant(H.I64, where)], source_etype=H.PTR)
        return b.load(slot, typ=H.PTR)

    status = b.gep(workspace, [ir.Constant(H.I64, 0)], source_etype=H.I8)
    b.store(ir.Constant(H.I32, 0), status)
    release = thread_pool.hold_team(module, b, threads)     # workers stay up between this call's loops
    for idx, kernel_name, table_slots, uses_status in calls:
        node = graph.nodes[idx]
        args = [pointer(*plan.storage[v]) for v in node.inputs if v]
        args += [pointer(*plan.storage[v]) for v in node.outputs if v]
        args += [pointer("arena", off) for off in plan.scratch.get(idx, [])]
        args += [pointer("const", slot) for slot in table_slots]
        args += [status] if uses_status else []
        kernel = kernel_of(module, kernel_name)
        if len(args) + 1 != len(kernel.args):
            raise CompileError(f"kernel {kernel_name} takes {len(kernel.args) - 1} pointers, got {len(args)}")
        b.call(kernel, args + [threads])
    _copy_stray_outputs(module, b, graph, plan, pointer)
    release()
    b.ret(b.load(status, typ=H.I32))


def _copy_stray_outputs(module, b, graph, plan, pointer):
    """An output that lives elsewhere (a graph input, a weight, or a name listed twice,
    which the planner gives its last slot) is copied into its caller's buffer, which
    would otherwise return uninitialised memory (BAD_INPUTS row 26)."""
    move = H.intrinsic(module, "llvm.memmove.p0.p0.i64", H.VOID, [H.PTR, H.PTR, H.I64, H.I1])
    for j, v in enumerate(graph.outputs):
        where = plan.storage[v.name]
        if where == ("output", j):
            continue
        if where[0] == "arena":          # the arena is reused: its bytes may be stale by now
            raise CompileError(f"output '{v.name}' was planned in the arena, not the caller's buffer")
        b.call(move, [pointer("output", j), pointer(*where), ir.Constant(H.I64, v.type.nbytes),
                      ir.Constant(H.I1, 0)])
