"""float16 is a storage type on the CPU: arithmetic runs in float32.

CPUs without AVX512-FP16 have no half-precision arithmetic, and kernels written
for float32 (GEMM's accumulators, reductions) lose digits or misbehave at half
width (a float16 GEMM crashed). Each op that computes on float16 values reads
them through a Cast to float32 and writes a float32 result that one Cast rounds
back, so every op's output is rounded to float16 once, as ONNX Runtime's are."""
from ..ir.graph import GraphBuilder
from ..ir.types import DType
from ..ops import get_op

_FLOAT32, _FLOAT16 = 1, 10     # ONNX TensorProto codes, as Cast's `to` takes them


def _computes_on_float16(node, types):
    opdef = get_op(node.op)
    if node.op == "Cast" or opdef.alias or opdef.type_fold is not None:
        return False
    return any(i and types[i].dtype == DType.float16 for i in node.inputs)


def compute_float16_in_float32(graph):
    """Needs: a verified graph. Gives: no op but Cast and views reads a float16 value;
    each float16 output is a Cast of the op's float32 result (same names, same types)."""
    if not any(_computes_on_float16(n, graph.types) for n in graph.nodes):
        return graph
    b = GraphBuilder(graph.name, fold=False)
    b.inputs, b.outputs = list(graph.inputs), list(graph.outputs)
    b.constants, b.types = dict(graph.constants), dict(graph.types)
    widened = {}

    def half(value):
        return bool(value) and graph.types[value].dtype == DType.float16

    def widen(value):
        if value not in widened:
            widened[value] = b.add_node("Cast", [value], {"to": _FLOAT32}, name=f"{value}/widen")
        return widened[value]

    for node in graph.nodes:
        if not _computes_on_float16(node, graph.types):
            b.nodes.append(node)
            continue
        inputs = [widen(i) if half(i) else i for i in node.inputs]
        outputs = [b.fresh("wide") if half(o) else o for o in node.outputs]
        for o in filter(half, node.outputs):
            del b.types[o]                  # redefined below by the rounding Cast
        b.add_node(node.op, inputs, dict(node.attrs), outputs=outputs, name=node.name)
        for o, wide in zip(node.outputs, outputs):
            if half(o):
                b.add_node("Cast", [wide], {"to": _FLOAT16}, outputs=[o], name=f"{node.name}/round")
    return b.build()
