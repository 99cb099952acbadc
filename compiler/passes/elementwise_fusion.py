"""Element-wise fusion (XLA's loop fusion, TVM's injective fusion): connected
element-wise ops of one output size become one FusedElementwise node.

A group grows from a root (the last op of a chain, walking backwards) over producers
of the root's size whose every user is already in the group, so the intermediate is
never written to memory, or that are one cheap op reading at most one value of that
size (recomputed here too: reading its input costs what reading its result would). Smaller values (a
per-channel scale) stay separate ops and are read with broadcasting; an Expand of a
constant shape is read as its source, broadcast (it costs nothing in the loop).

A group that reads a graph output of its own size and dtype, made by another group
that nobody else reads (an optimizer's new momentum, read by the weight's update),
takes that group in and writes the value as an extra output: one pass over the
parameter, not one per state slot (XLA's multi-output loop fusion)."""
import math

from ..ir.graph import Node
from ..ops import get_op


def _elementwise(node):
    return node is not None and len(node.outputs) == 1 and get_op(node.op).expr is not None and \
        all(node.inputs)         # an omitted optional input has no place in a program


def _broadcasts_to(shape, target):
    return len(shape) <= len(target) and all(
        d in (1, t) for d, t in zip(shape[::-1], target[::-1]))


def _groups(graph):
    """Lists of member nodes, the root first."""
    users, producers = graph.consumers(), graph.producers()
    outputs = set(graph.output_names())
    taken = set()
    for root in reversed(graph.nodes):
        if id(root) in taken or not _elementwise(root):
            continue
        shape = graph.types[root.outputs[0]].shape
        members, ids = [root], {id(root)}
        grown = True
        while grown:                      # until no producer can join
            grown = False
            for member in list(members):
                for v in member.inputs:
                    p = producers.get(v)
                    if not _elementwise(p) or id(p) in ids or id(p) in taken or v in outputs:
                        continue
                    t = graph.types[v]
                    if math.prod(t.shape) != math.prod(shape) or not _broadcasts_to(t.shape, shape):
                        continue
                    if all(id(u) in ids for u in users[v]) or _cheap_copy(graph, p, shape):
                        members.append(p)
                        ids.add(id(p))
                        grown = True
        gone = _absorbed(members, users)
        taken |= gone | {id(root)}
        yield members, gone


def _absorbed(members, users):
    """Members whose nodes go: every user is the root or another that goes (a value
    also read outside keeps its node, and so do the values it reads)."""
    gone = {id(m) for m in members[1:]}
    changed = True
    while changed:
        keep = {id(m) for m in members[1:] if id(m) in gone and
                any(id(u) not in gone and u is not members[0] for u in users[m.outputs[0]])}
        changed = bool(keep)
        gone -= keep
    return gone


CHEAP = {"Add", "Sub", "Mul", "Neg", "Relu", "Greater", "Less", "Where", "Cast"}


def _cheap_copy(graph, node, shape):
    """Whether a value used outside the group may be recomputed inside it as well
    (BatchNorm's x - mean, read by its statistics, its output and the backward
    pass): one cheap op reading at most one value of the group's size, so reading
    that instead of the op's result costs no more memory traffic."""
    size = math.prod(shape)
    return node.op in CHEAP and sum(math.prod(graph.types[i].shape) == size for i in set(node.inputs)) <= 1


def _source(graph, producers, value, shape):
    """The value a fused loop reads for `value`: an Expand's input when that is free."""
    p = producers.get(value)
    while p is not None and p.op == "Expand" and p.inputs[1] in graph.constants and \
            _broadcasts_to(graph.types[p.outputs[0]].shape, shape):
        value = p.inputs[0]
        p = producers.get(value)
    return value


def fuse_elementwise(graph):
    """Needs: epilogue fusion done (Conv/Gemm take their activations first).
    Gives: each group of two or more element-wise ops (or one reading an Expand) as
    one FusedElementwise node at the root's place, the others removed; then a
    ReduceSum/ReduceMean of such a value (its only use) as one FusedReduce; then a
    graph output that only one fused loop reads made in that loop (_merge_outputs)."""
    return _merge_outputs(_fuse_reductions(_fuse_maps(graph)))


def _fuse_maps(graph):
    producers = graph.producers()
    position = {id(n): k for k, n in enumerate(graph.nodes)}     # not a scan per group: quadratic
    replaced, removed = {}, set()
    for members, gone in _groups(graph):
        root = members[0]
        shape = graph.types[root.outputs[0]].shape
        order = sorted(members, key=lambda m: position[id(m)])
        step_of, inputs, program = {}, [], []

        def arg(v):
            if v in step_of:
                return f"s{step_of[v]}"
            v = _source(graph, producers, v, shape)
            if v not in inputs:
                inputs.append(v)
            return f"i{inputs.index(v)}"

        for node in order:
            program.append((node.op, tuple(sorted(node.attrs.items())), tuple(arg(v) for v in node.inputs)))
            step_of[node.outputs[0]] = len(program) - 1
        if len(members) == 1 and all(_source(graph, producers, v, shape) == v for v in root.inputs):
            continue                       # nothing gained
        replaced[id(root)] = Node("FusedElementwise", tuple(inputs), root.outputs,
                                  {"program": tuple(program), "shape": tuple(shape)}, f"{root.name}/fused")
        removed |= gone
    return graph.with_nodes([replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed])


def _program_of(node):
    """(program, inputs) of a fused node or of a single element-wise op."""
    if node.op == "FusedElementwise":
        return node.attrs["program"], node.inputs
    return ((node.op, tuple(sorted(node.attrs.items())), tuple(f"i{k}" for k in range(len(node.inputs)))),), \
        node.inputs


def _fuse_reductions(graph):
    from ..ops.reduce import reduce_axes
    users, producers = graph.consumers(), graph.producers()
    outputs = set(graph.output_names())
    replaced, removed = {}, set()
    for node in graph.nodes:
        if node.op not in ("ReduceSum", "ReduceMean"):
            continue
        x = node.inputs[0]
        p = producers.get(x)
        if not (p is not None and (p.op == "FusedElementwise" or _elementwise(p))) or x in outputs or \
                len(p.outputs) != 1 or \
                len(users[x]) != 1 or (len(node.inputs) > 1 and node.inputs[1] not in graph.constants):
            continue
        types = [graph.types[i] if i else None for i in node.inputs]
        axes = reduce_axes(node.name, node.attrs, types, [graph.constants.get(i) for i in node.inputs])
        if not axes:
            continue
        program, inputs = _program_of(p)
        replaced[id(node)] = Node("FusedReduce", tuple(inputs), node.outputs, {
            "program": program, "shape": graph.types[x].shape, "axes": tuple(axes),
            "keepdims": node.attrs.get("keepdims", 1), "mean": int(node.op == "ReduceMean")},
            f"{node.name}/fused")
        removed.add(id(p))
    return graph.with_nodes([replaced.get(id(n), n) for n in graph.nodes if id(n) not in removed])


def _loop(node):
    return node.op == "FusedElementwise" or _elementwise(node)


def _merge_outputs(graph):
    """A loop R reading a graph output v of R's own type, made by another loop P that
    no other node reads: P's steps run first in R, which also writes v (attribute
    `extra`: the steps written as outputs 1, 2, ...). The same steps in the same
    order, so the values are bit-identical; P's inputs are read in R's place."""
    outputs = set(graph.output_names())
    nodes = list(graph.nodes)
    producer = {v: k for k, n in enumerate(nodes) for v in n.outputs if v}
    readers = {}
    for k, n in enumerate(nodes):
        for v in set(n.inputs):
            readers.setdefault(v, set()).add(k)
    for k, r in enumerate(nodes):
        if r is None or not _loop(r):
            continue
        out = graph.types[r.outputs[0]]
        for v in list(r.inputs):
            j = producer.get(v)
            p = nodes[j] if j is not None else None
            if p is None or j == k or not _loop(p) or v not in outputs or readers[v] != {k} or \
                    graph.types[v] != out or not all(graph.types[o] == out for o in p.outputs):
                continue
            r = nodes[k] = _inlined(p, r, v, out.shape)
            nodes[j] = None
            for o in p.outputs:
                producer[o] = k
            for i in set(p.inputs):
                readers[i] = (readers[i] - {j}) | {k}
    return graph.with_nodes([n for n in nodes if n is not None])


def _inlined(p, r, v, shape):
    """R with P's steps first; v (P's result) read from P's last step."""
    p_program, p_inputs = _program_of(p)
    r_program, r_inputs = _program_of(r)
    inputs = []

    def read(name):
        if name not in inputs:
            inputs.append(name)
        return f"i{inputs.index(name)}"
    offset = len(p_program)
    program = [(op, attrs, tuple(read(p_inputs[int(a[1:])]) if a[0] == "i" else a for a in args))
               for op, attrs, args in p_program]
    for op, attrs, args in r_program:
        program.append((op, attrs, tuple(
            (f"s{offset - 1}" if r_inputs[int(a[1:])] == v else read(r_inputs[int(a[1:])])) if a[0] == "i"
            else f"s{int(a[1:]) + offset}" for a in args)))
    extra = tuple(e + offset for e in r.attrs.get("extra") or ()) + (offset - 1,) + tuple(p.attrs.get("extra") or ())
    return Node("FusedElementwise", tuple(inputs), tuple(r.outputs) + tuple(p.outputs),
                {"program": tuple(program), "shape": tuple(shape), "extra": extra},
                r.name if r.op == "FusedElementwise" else f"{r.name}/fused")
