"""Parse the printer's text form back into a Graph (golden tests of passes).

Constants' values are not in the text: pass them in `constants`, or they are
zeros of the printed type."""
import ast
import re

import numpy as np

from ..errors import GraphError
from .graph import GraphBuilder
from .types import DType

_TYPE = r"(\w+)\[([\d, ]*)\]"
_HEADER = re.compile(r"graph (\S+)\((.*)\) \{$")
_CONST = re.compile(rf"const %(\S+): {_TYPE}$")
_NODE = re.compile(r"(.+?) = (\w+)\((.*?)\)(?: \{(.*)\})?$")
_RETURN = re.compile(r"return (.*)$")


def _shape(text):
    return tuple(int(d) for d in text.split(",") if d.strip())


def _attrs(text):
    attrs = {}
    for key, value in re.findall(r"(\w+)=(\"[^\"]*\"|\[[^\]]*\]|[^,]+)", text or ""):
        parsed = ast.literal_eval(value.strip())
        attrs[key] = tuple(parsed) if isinstance(parsed, list) else parsed
    return attrs


def parse_graph(text, constants=None):
    constants = constants or {}
    lines = [ln.strip() for ln in text.strip().splitlines()]
    header = _HEADER.match(lines[0])
    if not header or lines[-1] != "}":
        raise GraphError("not a printed graph: expected 'graph NAME(...) {' ... '}'")
    b = GraphBuilder(header.group(1), fold=False)
    for name, dtype, shape in re.findall(rf"%([^:\s]+): {_TYPE}", header.group(2)):
        b.add_input(name, DType(dtype), _shape(shape))
    for line in lines[1:-1]:
        if m := _CONST.match(line):
            name, dtype, shape = m.groups()
            value = constants.get(name)
            b.add_constant(np.zeros(_shape(shape), DType(dtype).numpy) if value is None else value, name)
        elif m := _RETURN.match(line):
            b.set_outputs([o.strip().lstrip("%") for o in m.group(1).split(",")])
        elif m := _NODE.match(line):
            outs = [o.split(":")[0].strip().lstrip("%") for o in re.split(r",\s*(?=%)", m.group(1))]
            ins = [i.strip().lstrip("%") if i.strip() != "_" else "" for i in m.group(3).split(",")
                   if i.strip()]
            b.add_node(m.group(2), ins, _attrs(m.group(4)), outputs=outs)
        else:
            raise GraphError(f"cannot parse IR line: {line}")
    return b.build()
