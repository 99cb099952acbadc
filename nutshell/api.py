"""ns.compile: any model (DSL module, Graph, ONNX path) -> CompiledModel."""
import re

from nutshell.compiler.codegen.model import build_model, check_memory
from nutshell.compiler.ir import Graph, verify
from nutshell.compiler.lower.target import host_target
from nutshell.compiler.passes.pipeline import run_pipeline
from nutshell.runtime.jit import JitModule
from nutshell.runtime.model import CompiledModel
from nutshell.runtime.model_cache import ModelCache


def to_graph(model, input_shape=None, input_name="input", example_inputs=None):
    """A Graph from a Graph, an ns.nn Module (traced at `input_shape`, or called on
    `example_inputs`: an array or a tuple of arrays) or an ONNX path."""
    from nutshell.frontends.dsl import Module
    if example_inputs is not None and not isinstance(model, Module):
        raise TypeError("example_inputs= is for ns.nn modules; a graph or ONNX file has its inputs")
    if isinstance(model, Graph):
        return model
    if isinstance(model, Module):
        if input_shape is None and example_inputs is None:
            raise ValueError("compiling a module needs input_shape=(N, C, H, W) or example_inputs=")
        return model.trace(input_shape, input_name=input_name, example_inputs=example_inputs)
    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        from nutshell.frontends.onnx_import import load_onnx
        return load_onnx(model)
    raise TypeError(f"cannot compile a {type(model).__name__}")


def c_identifier(name):
    ident = re.sub(r"[^A-Za-z0-9_]", "_", str(name)) or "model"   # ASCII: C and file names
    return ident if not ident[0].isdigit() else "m_" + ident


def optimize_graph(graph, verify_each=False, print_after=()):
    return run_pipeline(verify(graph), verify_each=verify_each, print_after=print_after)


def compile(model, input_shape=None, threads=None, name=None, verify_each=False, print_after=(),
            vector_cap=512, example_inputs=None):
    """Compile `model` to native code for this CPU and return a CompiledModel.

    input_shape: a module's one float32 input, or example_inputs: an array or a
    tuple of arrays (int64 token ids too), one per forward argument.
    threads: worker threads for parallel loops, 1 to 1024 (default: all cores, at most 1024).
    print_after: pass names (or "all") whose IR is printed, like --print-after.
    vector_cap: 256 or 32 ask for AVX2-wide or scalar code instead of AVX-512.
    """
    graph = optimize_graph(to_graph(model, input_shape, example_inputs=example_inputs), verify_each,
                           tuple(print_after))
    target = host_target(threads, vector_cap)
    name = c_identifier(name or graph.name)
    check_memory(graph)
    cache = ModelCache(graph, target, name)
    hit = cache.load_code(graph)
    if hit is not None:              # the same graph compiled before: link its object
        return CompiledModel(graph, hit[1], JitModule.from_object(hit[0], target), target)
    code = build_model(graph, target, name)
    jit = JitModule(code.llvm_ir, target)
    cache.store_code(graph, code, jit.object)
    return CompiledModel(graph, code, jit, target)
