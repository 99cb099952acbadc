"""Text form of loop IR kernels (what `model.source("loops")` shows)."""
from dataclasses import fields, is_dataclass

import numpy as np

from .loop_ir import Bin, Call, Const, For, Load, Reduce, Select, Store, Transpose, Var


def expr_str(e):
    if isinstance(e, Const):
        return repr(e.value)
    if isinstance(e, Var):
        return e.name
    if isinstance(e, Bin):
        return f"({expr_str(e.a)} {e.op} {expr_str(e.b)})"
    if isinstance(e, Call):
        extra = f"<{e.dtype.value}>" if e.fn == "cast" else ""
        return f"{e.fn}{extra}(" + ", ".join(expr_str(a) for a in e.args) + ")"
    if isinstance(e, Select):
        return f"select({expr_str(e.cond)}, {expr_str(e.a)}, {expr_str(e.b)})"
    if isinstance(e, Load):
        mask = f" if {expr_str(e.mask)}" if e.mask is not None else ""
        return f"{e.buf.name}[{expr_str(e.index)}{mask}]"
    if isinstance(e, Reduce):
        lanes = f" x{e.lanes}" if e.lanes > 1 else ""
        return f"{e.op}({e.var.name} < {e.extent}{lanes}: {expr_str(e.body)})"
    return repr(e)


def _stmts(stmts, indent, out):
    pad = "  " * indent
    for s in stmts:
        if isinstance(s, For):
            lanes = f" x{s.lanes}" if s.kind == "vector" else ""
            limit = f" while < {expr_str(s.limit)}" if s.limit is not None else ""
            out.append(f"{pad}for {s.var.name} in {s.kind}({s.extent}){lanes}{limit}:")
            _stmts(s.body, indent + 1, out)
        elif isinstance(s, Store):
            mask = f" if {expr_str(s.mask)}" if s.mask is not None else ""
            out.append(f"{pad}{s.buf.name}[{expr_str(s.index)}] = {expr_str(s.value)}{mask}")
        elif isinstance(s, Transpose):
            out.append(f"{pad}{s.dst.name}[{expr_str(s.dst_index)} + c * {expr_str(s.dst_stride)} + r] = "
                       f"{s.src.name}[{expr_str(s.src_index)} + r * {expr_str(s.src_stride)} + c] "
                       f"for r < {s.rows} (zeros to {s.store_rows}), c < {s.cols}")


def print_kernel(kernel):
    params = ", ".join(f"{b.name}: {b.dtype.value}[{b.size}]" for b in kernel.params)
    out = [f"kernel {kernel.name}({params}):"]
    for b in kernel.locals:
        out.append(f"  local {b.name}: {b.dtype.value}[{b.size}]")
    _stmts(kernel.body, 1, out)
    return "\n".join(out)


_FIELDS = {}     # dataclass type -> its field names


def structure_key(*roots):
    """A complete text of loop-IR trees: every field of every node (dtypes, buffer
    names and sizes, masks, lanes, limits), a node met again as a back-reference, so
    that equal keys mean the same code whichever kernel the trees came from (the
    emitter reuses a parallel loop's worker by it). print_kernel leaves types out."""
    seen, out = {}, []

    def walk(x):
        names = _FIELDS.get(type(x))
        if names is None and is_dataclass(x):
            names = _FIELDS[type(x)] = tuple(f.name for f in fields(x))
        if names is not None:
            if id(x) in seen:
                out.append(f"@{seen[id(x)]}")
                return
            seen[id(x)] = len(seen)
            out.append(type(x).__name__ + "(")
            for name in names:
                walk(getattr(x, name))
            out.append(")")
        elif isinstance(x, (list, tuple)):
            out.append("[")
            for y in x:
                walk(y)
            out.append("]")
        elif isinstance(x, np.ndarray):       # repr elides the middle of a large array
            out.append(f"{x.dtype.str}{x.shape}{x.tobytes().hex()}")
        else:
            out.append(repr(x))
    walk(roots)
    return ",".join(out)
