"""Readable text form of a Graph, stable enough for golden tests.

    graph lenet(%input: float32[1, 1, 28, 28]) {
      const %fc.weight: float32[10, 84]
      %conv_1: float32[1, 6, 28, 28] = Conv(%input, %c1.w, %c1.b) {pads=[2, 2, 2, 2]}
      return %out
    }
"""
import numpy as np


def _fmt_attr(value):
    if isinstance(value, np.ndarray):
        return f"tensor<{value.dtype}{list(value.shape)}>"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt_attr(v) for v in value) + "]"
    if isinstance(value, float):
        return repr(float(value))
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)


def print_graph(graph, show_constants=True):
    args = ", ".join(f"%{v.name}: {v.type}" for v in graph.inputs)
    lines = [f"graph {graph.name}({args}) {{"]
    if show_constants:
        for name in graph.constants:
            lines.append(f"  const %{name}: {graph.types[name]}")
    for node in graph.nodes:
        outs = ", ".join(f"%{o}: {graph.types[o]}" for o in node.outputs if o)
        ins = ", ".join(f"%{i}" if i else "_" for i in node.inputs)
        attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(node.attrs.items()))
        lines.append(f"  {outs} = {node.op}({ins})" + (f" {{{attrs}}}" if attrs else ""))
    lines.append("  return " + ", ".join(f"%{v.name}" for v in graph.outputs))
    lines.append("}")
    return "\n".join(lines)
