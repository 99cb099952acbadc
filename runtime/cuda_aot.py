"""`nutshell compile --target cuda`: OUT/NAME.ptx (every launch an entry), OUT/NAME.cubin
when ptxas is found, OUT/NAME.h (the CPU bundle's header and NAME_run ABI),
OUT/NAME_weights.o (the weights as read-only host data, and NAME_error_string),
and OUT/NAME_host.c, which runs the model through the CUDA driver API:

    cc app.c NAME_host.c NAME_weights.o -I$CUDA_HOME/include -lcuda -lpthread

The first call loads the PTX (the driver compiles it for the GPU present) and
uploads the weights once per process; each call allocates its own device arena,
so threads may call NAME_run at once. The workspace argument is not used (the
arena is on the device); a CUDA failure returns NAME_ERR_CUDA (8)."""
import os

from llvmlite import ir

from nutshell.compiler.codegen.aot import add_constants, add_error_strings
from nutshell.compiler.codegen.c_header import c_identifier, c_string, inference_header
from nutshell.compiler.cuda.model import build_gpu_model
from nutshell.compiler.cuda.ptx import assemble, compile_ptx, find_ptxas
from nutshell.compiler.cuda.target import cuda_target
from nutshell.compiler.errors import CompileError
from nutshell.compiler.lower.target import host_target

from .aot import emit_object, write_new

_KINDS = {"input": 0, "output": 1, "const": 2, "arena": 3}
ERR_CUDA = 8                  # NAME_ERR_CUDA in cuda_host.c.in
CUDA_FAILED = "a CUDA driver call failed (no GPU or driver, a GPU older than the PTX, out of device memory)"


def export_cuda(graph, out_dir, name, arch="sm_90"):
    name = c_identifier(name)
    code = build_gpu_model(graph, cuda_target("cuda", arch), f"{name}_k")
    ptx = compile_ptx(code.llvm_ir, arch)
    os.makedirs(out_dir, exist_ok=True)
    root = os.path.realpath(out_dir)
    path = lambda suffix: os.path.join(root, name + suffix)
    written = {"ptx": path(".ptx"), "header": path(".h"), "object": path("_weights.o"), "host": path("_host.c"),
               "weights_bytes": int(sum(c.nbytes for c in code.constants))}
    write_new(written["ptx"], ptx)
    if find_ptxas() is not None:
        cubin, _ = assemble(ptx, arch)
        write_new(path(".cubin"), cubin)
        written["cubin"] = path(".cubin")
    write_new(written["header"], inference_header(name, graph, 1, 1))
    obj = _weights_object(name, code.constants)
    write_new(written["object"], obj)
    written["object_bytes"] = len(obj)
    write_new(written["host"], host_source(name, graph, code, ptx))
    return written


def refuse_cpu_options(options):
    """export()'s CPU options (target_cpu, triple, ...) given to a CUDA model: an error,
    not host objects where a cross-compile was asked for."""
    given = sorted(k for k, v in options.items() if v is not None)
    if given:
        raise CompileError(f"{', '.join(given)}: options of a CPU export, not of a CUDA model's")


def _weights_object(name, constants):
    target = host_target(1)
    module = ir.Module(name=f"{name}_weights")
    module.triple = target.triple
    table = add_constants(module, name, constants)
    table.linkage = ""          # visible to NAME_host.c
    add_error_strings(module, name, [(ERR_CUDA, CUDA_FAILED)])
    return emit_object(module, target)


def host_source(name, graph, code, ptx):
    """The C host file: the launch sequence as data, and NAME_run over the driver API."""
    width = max([len(s.args) for s in code.steps] + [1])     # no launch at all: a model of copies
    steps = []
    for s in code.steps:
        kinds = ", ".join(str(_KINDS[k]) for k, _ in s.args) or "0"
        wheres = ", ".join(f"{int(w)}ULL" for _, w in s.args) or "0"
        dims = ", ".join(f"{d}u" for d in tuple(s.grid) + (s.block[0],))
        steps.append(f"    {{{c_string(s.function)}, {{{dims}}}, {len(s.args)}, {{{kinds}}}, {{{wheres}}}}},")
    copies = [f"    {{{_KINDS[d[0]]}, {d[1]}ULL, {_KINDS[s[0]]}, {s[1]}ULL, {n}ULL}}," for d, s, n in code.copies]
    ins = ", ".join(str(v.type.nbytes) for v in graph.inputs) or "0"
    outs = ", ".join(str(v.type.nbytes) for v in graph.outputs) or "0"
    consts = ", ".join(str(max(c.nbytes, 1)) for c in code.constants) or "0"
    ptx_lines = "\n".join("    " + c_string(line + "\n") for line in ptx.splitlines())
    template = open(os.path.join(os.path.dirname(__file__), "cuda_host.c.in")).read()
    values = {"NAME": name, "NSTEPS": len(code.steps), "NARGS": width, "STEPS": "\n".join(steps) or "    {0},",
              "NCOPIES": len(code.copies), "COPIES": "\n".join(copies) or "    {0, 0, 0, 0, 0},",
              "NIN": len(graph.inputs), "NOUT": len(graph.outputs), "NCONST": len(code.constants),
              "IN_BYTES": ins, "OUT_BYTES": outs, "CONST_BYTES": consts, "ARENA": max(code.plan.arena_size, 64),
              "PTX": ptx_lines}
    for key, value in values.items():
        template = template.replace("@" + key + "@", str(value))
    return template
