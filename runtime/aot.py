"""Write AOT bundles: NAME.h, NAME.o (weights inside, read-only) and libNAME.so,
which needs only libc and libm at run time (its thread pool is inside). Also loads a bundle back
through ctypes, to test it against the JIT and onnxruntime."""
import ctypes
import os
import shutil
import subprocess

import numpy as np
from llvmlite import ir

from nutshell.compiler.codegen import thread_pool
from nutshell.compiler.codegen.aot import add_inference_api
from nutshell.compiler.codegen.c_header import c_identifier, inference_header
from nutshell.compiler.codegen.model import build_model
from nutshell.compiler.errors import CompileError
from nutshell.compiler.lower.target import CpuTarget, host_target, optimize
from nutshell.compiler.passes.pipeline import optimize_graph
from nutshell.runtime.jit import target_machine

# vector width implied by a named CPU when no feature list is given
_CPU_VECTOR_BITS = {"x86-64": 128, "x86-64-v2": 128, "x86-64-v3": 256, "x86-64-v4": 512, "generic": 128,
                    "haswell": 256, "broadwell": 256, "skylake": 256, "alderlake": 256, "raptorlake": 256,
                    "meteorlake": 256, "arrowlake": 256, "znver1": 256, "znver2": 256, "znver3": 256,
                    "skylake-avx512": 512, "cascadelake": 512, "cooperlake": 512, "icelake-client": 512,
                    "icelake-server": 512, "tigerlake": 512, "rocketlake": 512, "sapphirerapids": 512,
                    "emeraldrapids": 512, "graniterapids": 512, "znver4": 512, "znver5": 512}
HOST_CPU = ("host", "native")        # this machine, with its own feature list


def bundle_target(threads, target_cpu=None, triple=None):
    """The CpuTarget to emit for: the host, a named CPU, or another triple."""
    host = host_target(threads)
    if target_cpu in HOST_CPU and triple not in (None, host.triple):
        raise CompileError(f"--target-cpu {target_cpu} means this machine; name a CPU for --triple {triple}")
    if target_cpu in HOST_CPU or (target_cpu is None and triple is None):
        return host
    triple = triple or host.triple
    cpu = target_cpu or "generic"
    if triple.startswith("aarch64"):
        return CpuTarget(triple, cpu, "+neon", host.threads, 128)
    bits = _CPU_VECTOR_BITS.get(cpu)
    if bits is None:
        raise CompileError(f"unknown --target-cpu '{cpu}' (known: {', '.join(HOST_CPU)}, "
                           f"{', '.join(sorted(_CPU_VECTOR_BITS))})")
    features = {512: "+avx512f", 256: "+avx2", 128: "+sse2"}[bits]
    return CpuTarget(triple, cpu, features, host.threads, bits)


def emit_object(module, target):
    entry = module.globals.get(thread_pool.ENTRY)
    if entry is not None and entry.is_declaration:     # parallel loops: the bundle gets its own pool
        thread_pool.define(module, target.triple)
    tm = target_machine(target, reloc="pic", codemodel="default")
    return tm.emit_object(optimize(str(module), tm))


def link_shared(obj_path, so_path, uses_threads):
    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        raise CompileError("linking lib*.so needs a C compiler (cc); the .o and .h were written")
    cmd = [cc, "-shared", "-o", so_path, obj_path] + (["-lpthread"] if uses_threads else []) + ["-lm"]
    if os.path.lexists(so_path):
        os.unlink(so_path)                    # the linker must not write through a link
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise CompileError(f"linking failed: {' '.join(cmd)}\n{result.stderr}")


def write_new(path, data):
    """`data` (bytes or text) at `path` as a new file: an existing entry there (a
    symlink or a hard link to a file elsewhere) is removed, never written through
    (BAD_INPUTS row 5)."""
    try:
        if os.path.lexists(path):
            os.unlink(path)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError as exc:
        raise CompileError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as f:
        f.write(data)


def confined_paths(out_dir, name):
    """Output files inside out_dir only; name is already a C identifier (no '/', no '..')."""
    os.makedirs(out_dir, exist_ok=True)
    root = os.path.realpath(out_dir)
    paths = {ext: os.path.join(root, f"{prefix}{name}{ext}")
             for prefix, ext in (("", ".h"), ("", ".o"), ("lib", ".so"))}
    for path in paths.values():
        if os.path.dirname(os.path.realpath(path)) != root:
            raise CompileError(f"refusing to write {path}: it leads outside {root}")
    return paths


def export_inference(graph, out_dir, name, threads=None, target_cpu=None, triple=None):
    """Compile `graph` ahead of time into out_dir; returns a dict of what was written."""
    name = c_identifier(name)        # it names C symbols and files: never anything else
    target = bundle_target(threads, target_cpu, triple)
    module = ir.Module(name=name)
    module.triple = target.triple
    code = build_model(graph, target, f"{name}_impl", module=module)
    module.get_global(code.entry).linkage = "internal"
    add_inference_api(module, name, code, graph, target.threads)
    paths = confined_paths(out_dir, name)
    obj = emit_object(module, target)
    write_new(paths[".o"], obj)
    write_new(paths[".h"], inference_header(name, graph, code.plan.arena_size, target.threads))
    written = {"header": paths[".h"], "object": paths[".o"], "weights_bytes":
               int(sum(c.nbytes for c in code.constants)), "object_bytes": len(obj)}
    if target.triple == host_target().triple:
        link_shared(paths[".o"], paths[".so"], target.threads > 1)
        written["shared"] = paths[".so"]
    return written


def export_training(trainer, out_dir, name, target_cpu=None, triple=None):
    """The trainer's step and its evaluation model as one bundle over a state region
    that starts from the trainer's current values."""
    from nutshell.compiler.codegen.aot_train import add_training_api
    from nutshell.compiler.codegen.aot_train_split import add_split_bundle, with_split_header
    from nutshell.compiler.codegen.c_header import training_header
    name = c_identifier(name)
    target = bundle_target(trainer.threads, target_cpu, triple)
    tgraph = trainer.model.graph
    egraph = optimize_graph(trainer.module.trace(trainer.input_shape, mode="state"), target=target)
    module = ir.Module(name=name)
    module.triple = target.triple
    tcode = build_model(tgraph, target, f"{name}_train_impl", module=module)
    ecode = build_model(egraph, target, f"{name}_eval_impl", module=module)
    for code in (tcode, ecode):
        module.get_global(code.entry).linkage = "internal"
    layout = dict(trainer.layout, output_size=egraph.outputs[0].type.size)
    numbers = add_training_api(module, name, (tgraph, tcode), (egraph, ecode), layout,
                               trainer.state(), target.threads)
    split = add_split_bundle(module, name, _split_halves(trainer, target), tgraph, layout, target)  # grads/apply
    numbers.update(split, workspace=max(numbers["workspace"], split["workspace"]))
    paths = confined_paths(out_dir, name)
    obj = emit_object(module, target)
    write_new(paths[".o"], obj)
    write_new(paths[".h"], with_split_header(training_header(name, tgraph, layout, numbers, target.threads),
                                             name, numbers, layout["class_labels"]))
    written = {"header": paths[".h"], "object": paths[".o"], "object_bytes": len(obj), **numbers}
    if target.triple == host_target().triple:
        link_shared(paths[".o"], paths[".so"], target.threads > 1)
        written["shared"] = paths[".so"]
    return written


def _split_halves(trainer, target):
    """The trainer's step as its grads and apply halves, optimised (for add_split_bundle)."""
    from nutshell.training_split import build_apply_graph, build_grads_graph, grad_name
    reg = dict(getattr(trainer, "regularisation", {}))
    clip = {k: reg.pop(k) for k in ("clip_norm", "clip_value", "max_norm") if k in reg}
    ggraph, glayout = build_grads_graph(trainer.recipe, **reg)
    agraph, apply_state = build_apply_graph(ggraph, glayout, trainer.optimizer, **clip)
    return (optimize_graph(ggraph, target=target), optimize_graph(agraph, target=target), apply_state,
            grad_name)


class AotModel:
    """A lib*.so bundle loaded with ctypes (for tests and for Python users)."""

    def __init__(self, so_path, name, graph):
        self.lib = ctypes.CDLL(os.path.abspath(so_path))
        self.graph, self.name = graph, name
        self.run_fn = getattr(self.lib, f"{name}_run_threads")
        self.run_fn.restype = ctypes.c_int
        self.run_fn.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int]
        self.error_string = getattr(self.lib, f"{name}_error_string")
        self.error_string.restype = ctypes.c_char_p

    def run(self, feeds, workspace, threads=1):
        from nutshell.runtime.model import _pointer_array
        arrays = [np.ascontiguousarray(feeds[v.name]) for v in self.graph.inputs]
        outs = [np.empty(v.type.shape, v.type.dtype.numpy) for v in self.graph.outputs]
        ins, outp = _pointer_array(arrays), _pointer_array(outs)
        code = self.run_fn(ctypes.addressof(ins), ctypes.addressof(outp), workspace.ctypes.data, threads)
        if code:
            raise RuntimeError(self.error_string(code).decode())
        return {v.name: o for v, o in zip(self.graph.outputs, outs)}
