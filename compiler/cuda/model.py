"""Assemble a whole model for a CUDA target: every node lowered for one lane and
one thread, each kernel split into grid launches (grid.py) and emitted by
GpuKernelEmitter, plus the launch sequence the host runs:
- PTX (target="cuda"): the kernels' module, its launch list for the driver API
  (runtime/cuda_driver.py) or the generated C host file (runtime/cuda_aot.py);
- emulated (target="cuda-emulated"): the same kernels for the host CPU and an
  entry `NAME_run(inputs, outputs, workspace, consts, threads)` with the CPU
  model's ABI, so runtime/model.py's CompiledModel runs it unchanged."""
from dataclasses import dataclass

from llvmlite import ir

from ..codegen import llvm_helpers as H
from ..codegen.model import _is_alias, check_memory, lower_nodes
from ..lower.planner import plan_memory
from .emitter import GpuKernelEmitter
from .grid import launches
from .rules import gpu_lowering


@dataclass
class Step:
    """One kernel launch of `function` on a grid of blocks (x, y, z) of `block`
    threads, its pointer arguments as plan references: ("input"|"output", i),
    ("const", slot), ("arena", offset)."""
    function: str
    grid: tuple
    block: tuple
    args: list


@dataclass
class GpuModelCode:
    llvm_ir: str
    entry: str               # emulated: NAME_run; PTX: no host entry in the module
    constants: list
    plan: object
    kernels: list            # loop-IR kernels, for source("loops")
    steps: list              # [Step] in run order
    copies: list             # [(dst ref, src ref, bytes)]: outputs living elsewhere
    num_calls: int
    module: object = None


def build_gpu_model(graph, target, name="model"):
    check_memory(graph)
    const_names = list(graph.constants)
    constants = [graph.constants[n] for n in const_names]
    const_index = {n: j for j, n in enumerate(const_names)}
    module = ir.Module(name=name)
    module.triple = target.triple if not target.emulated else _host_triple()

    lowered, calls, scratch_sizes, by_sig = [], [], {}, {}
    for node in lower_nodes(graph, target, name, const_index, constants, gpu_lowering):
        if node.first:
            kernel = node.kernel
            emitter = GpuKernelEmitter(module, kernel, ptx=not target.emulated)
            grid = by_sig[node.signature] = launches(kernel)
            for launch in grid:
                emitter.emit_launch(launch)
            lowered.append(kernel)
        scratch_sizes[node.idx] = node.scratch_sizes
        calls.append((node.idx, by_sig[node.signature], node.table_slots, node.ctx.status_buffer is not None))

    plan = plan_memory(graph, scratch_sizes, const_index, _is_alias)
    steps = []
    for idx, grid, table_slots, uses_status in calls:
        node = graph.nodes[idx]
        args = [plan.storage[v] for v in node.inputs if v] + [plan.storage[v] for v in node.outputs if v]
        args += [("arena", off) for off in plan.scratch.get(idx, [])]
        args += [("const", slot) for slot in table_slots]
        args += [("arena", 0)] if uses_status else []        # the status word starts the arena
        steps += [Step(launch.name, launch.grid, launch.block, args) for launch in grid]
    copies = [(("output", j), plan.storage[v.name], v.type.nbytes) for j, v in enumerate(graph.outputs)
              if plan.storage[v.name] != ("output", j)]
    entry = f"{name}_run"
    if target.emulated:
        _emit_emulated_entry(module, entry, steps, copies)
    return GpuModelCode(str(module), entry, constants, plan, lowered, steps, copies, len(calls), module)


def _host_triple():
    import llvmlite.binding as llvm
    return llvm.get_process_triple()


def _emit_emulated_entry(module, entry, steps, copies):
    """The CPU model's entry point, launching each step's grid in order."""
    fn = ir.Function(module, ir.FunctionType(H.I32, [H.PTR] * 4 + [H.I32]), name=entry)
    fn.attributes.add("nounwind")
    inputs, outputs, workspace, consts, _threads = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    slots = {"input": inputs, "output": outputs, "const": consts}

    def pointer(ref):
        kind, where = ref
        if kind == "arena":
            return b.gep(workspace, [ir.Constant(H.I64, where)], source_etype=H.I8)
        return b.load(b.gep(slots[kind], [ir.Constant(H.I64, where)], source_etype=H.PTR), typ=H.PTR)

    status = pointer(("arena", 0))
    b.store(ir.Constant(H.I32, 0), status)
    for step in steps:
        b.call(module.get_global(step.function), [pointer(r) for r in step.args])
    move = H.intrinsic(module, "llvm.memmove.p0.p0.i64", H.VOID, [H.PTR, H.PTR, H.I64, H.I1])
    for dst, src, nbytes in copies:
        b.call(move, [pointer(dst), pointer(src), ir.Constant(H.I64, nbytes), ir.Constant(H.I1, 0)])
    b.ret(b.load(status, typ=H.I32))
