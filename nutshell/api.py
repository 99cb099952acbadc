"""ns.compile: any model (DSL module, Graph, ONNX path) -> CompiledModel."""
from nutshell.compiler.codegen.c_header import c_identifier
from nutshell.compiler.codegen.model import check_memory
from nutshell.compiler.ir import Graph
from nutshell.compiler.errors import CompileError
from nutshell.compiler.lower.target import checked_threads, host_target
from nutshell.compiler.passes.pipeline import optimize_graph
from nutshell.runtime.model_cache import cached_model


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


def compile(model, input_shape=None, threads=None, name=None, verify_each=False, print_after=(),
            vector_cap=512, example_inputs=None, target="cpu", arch=None):
    """Compile `model` to native code for this CPU and return a CompiledModel.

    input_shape: a module's one float32 input, or example_inputs: an array or a
    tuple of arrays (int64 token ids too), one per forward argument.
    threads: worker threads for parallel loops, 1 to 1024 (default: all cores, at most 1024).
    print_after: pass names (or "all") whose IR is printed, like --print-after.
    vector_cap: 256 or 32 ask for AVX2-wide or scalar code instead of AVX-512.
    target: "cpu", "cuda" (PTX run by the CUDA driver) or "cuda-emulated" (the same GPU
    kernels run on this CPU); arch: the PTX's compute capability (sm_80, sm_90; default:
    the GPU's, sm_90 emulated).
    """
    if target != "cpu":
        from nutshell.runtime.cuda import compile_cuda
        checked_threads(threads)     # a GPU ignores threads, but a bad value is still an error
        graph = to_graph(model, input_shape, example_inputs=example_inputs)
        return compile_cuda(graph, target, c_identifier(name or graph.name), arch, verify_each, print_after)
    if arch is not None:
        raise CompileError(f"arch={arch!r} is for target='cuda' or 'cuda-emulated', not 'cpu'")
    target = host_target(threads, vector_cap)
    graph = optimize_graph(to_graph(model, input_shape, example_inputs=example_inputs), verify_each,
                           tuple(print_after), target)
    name = c_identifier(name or graph.name)
    check_memory(graph)
    return cached_model(graph, target, name)     # a hit links the object compiled before
