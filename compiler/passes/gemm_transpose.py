"""Transposes folded into GEMMs, and a weight's per-use gradients as one GEMM.

Autodiff of a recurrent net (passes/recurrent.py: the recurrent weight R^T read
by every time step's Gemm) leaves three costly shapes, each rewritten here:
- Gemm(dG, Transpose(R), transB=1): the GEMM would transpose its B into scratch
  at every step; Gemm(dG, R) reads R as it is. A-side Transposes become transA
  (the micro-kernel reads A's columns contiguously then).
- R^T's gradient as a sum over the steps of Gemm(h_t, dG_t, transA=1), each a
  k = batch GEMM: one Gemm(Concat(h_t), Concat(dG_t), transA=1) over all steps
  instead (k = steps x batch, the weight gradient accumulated once).
- Transpose(Gemm(a, b, transA=1)) (R's gradient from R^T's): Gemm(b, a, transA=1)
  writes the transposed product directly.
Each rewrite keeps the value names that other nodes read. First, a Transpose of a
Transpose reads the first one's input (autodiff's inverse permutations: a Linear's
W^T transposed back for dx, attention's K^T): one copy or none instead of two."""
from dataclasses import replace

from ..ir.graph import Node
from ..ops import get_op

_FLOAT = ("float32", "float64")


def _plain_gemm(node, types, constants=()):
    """A Gemm (or a 2-D MatMul by a computed B: a constant one is packed once, as a
    MatMul) with no epilogue: (a, b, c, ta, tb, alpha)."""
    if node.op == "MatMul" and all(types[i].rank == 2 for i in node.inputs) and node.inputs[1] not in constants:
        a, b = node.inputs
        return a, b, "", 0, 0, 1.0
    if node.op != "Gemm" or node.attrs.get("activation") is not None or node.attrs.get("beta", 1.0) != 1.0:
        return None
    a, b, c = (tuple(node.inputs) + ("",))[:3]
    return a, b, c, node.attrs["transA"], node.attrs["transB"], node.attrs["alpha"]


def _gemm(a, b, c, ta, tb, alpha, out, name):
    attrs = get_op("Gemm").normalize_attrs({"alpha": alpha, "transA": int(ta), "transB": int(tb)},
                                           3 if c else 2)
    return Node("Gemm", (a, b, c) if c else (a, b), (out,), attrs, name)


def _transposed_2d(node, types):
    """The input of a 2-D Transpose node (perm (1, 0)), else None."""
    if node is None or node.op != "Transpose" or types[node.inputs[0]].rank != 2:
        return None
    return node.inputs[0] if tuple(node.attrs.get("perm") or (1, 0)) == (1, 0) else None


def fold_transposes(graph):
    """Gives: a 2-D Gemm/MatMul reading a Transpose's output reads its input instead
    (A: flipping transA; B: only where that clears transB, which costs a copy)."""
    types, made = graph.types, graph.producers()
    nodes = []
    for node in graph.nodes:
        g = _plain_gemm(node, types, graph.constants) if types[node.outputs[0]].dtype.value in _FLOAT else None
        if g:
            a, b, c, ta, tb, alpha = g
            src_a, src_b = _transposed_2d(made.get(a), types), _transposed_2d(made.get(b), types)
            if src_a or (src_b and tb):
                a, ta = (src_a, 1 - ta) if src_a else (a, ta)
                b, tb = (src_b, 0) if src_b and tb else (b, tb)
                node = _gemm(a, b, c, ta, tb, alpha, node.outputs[0], node.name)
        nodes.append(node)
    return graph.with_nodes(nodes)


def _merge_term(node, types, users, outputs):
    """(a, b) of a term Gemm(a, b, transA=1) of a gradient sum (read only there), else None."""
    private = node is not None and len(users.get(node.outputs[0], ())) == 1 and node.outputs[0] not in outputs
    g = _plain_gemm(node, types) if private else None
    if g and not g[2] and g[3] == 1 and g[4] == 0 and g[5] == 1.0:
        return g[:2]
    return None


def _sum_leaves(root, made, users, outputs):
    """The terms of an Add tree (inner Adds read once, by the tree): leaf values, inner Adds."""
    leaves, inner, todo = [], [], list(root.inputs)
    while todo:
        v = todo.pop()
        p = made.get(v)
        if p is not None and p.op == "Add" and len(users.get(v, ())) == 1 and v not in outputs:
            inner.append(p)
            todo.extend(p.inputs)
        else:
            leaves.append(v)
    return leaves, inner


def merge_gradient_sums(graph):
    """Gives: a sum (Add tree) of two or more Gemm(a_i, b_i, transA=1) of one shape as
    Gemm(Concat(a_i), Concat(b_i), transA=1) (+ the other terms as its C), at the
    root Add's place; an existing Concat of exactly the b_i is moved there and read."""
    types, made, users = graph.types, graph.producers(), graph.consumers()
    outputs, shape = set(graph.output_names()), lambda v: tuple(types[v].shape)
    concats = {frozenset(n.inputs): n for n in graph.nodes
               if n.op == "Concat" and n.attrs.get("axis") == 0 and len(set(n.inputs)) == len(n.inputs)}
    gone, at_root = set(), {}
    position = {id(n): i for i, n in enumerate(graph.nodes)}
    for root in reversed(graph.nodes):
        if root.op != "Add" or id(root) in gone or shape(root.inputs[0]) != shape(root.inputs[1]) \
                or types[root.outputs[0]].dtype.value not in _FLOAT:
            continue
        leaves, inner = _sum_leaves(root, made, users, outputs)
        if any(shape(i) != shape(root.inputs[0]) for n in inner for i in n.inputs):
            continue               # a broadcasting Add inside
        terms = {v: _merge_term(made.get(v), types, users, outputs) for v in leaves}
        pairs = [(v, t) for v, t in terms.items() if t and shape(v) == shape(root.outputs[0])]
        if len(pairs) < 2 or len(set(v for v, _ in pairs)) != len(pairs):
            continue
        rest = [v for v in leaves if not terms.get(v) or v not in dict(pairs)]
        if len(rest) > 1:
            continue               # a plain sum with other terms too: left as it is
        by_b = {t[1]: t[0] for _, t in pairs}
        found = concats.get(frozenset(by_b)) if len(by_b) == len(pairs) else None
        b_order = list(found.inputs) if found else [t[1] for _, t in pairs]
        a_order = [by_b[b] for b in b_order] if found else [t[0] for _, t in pairs]
        moved = found if found and position[id(found)] > position[id(root)] else None
        out = root.outputs[0]
        new = [] if found and not moved else [moved] if moved else \
            [Node("Concat", tuple(b_order), (f"{out}/b",), {"axis": 0}, f"{root.name}/b")]
        b_cat = found.outputs[0] if found else new[0].outputs[0]
        new.append(Node("Concat", tuple(a_order), (f"{out}/a",), {"axis": 0}, f"{root.name}/a"))
        new.append(_gemm(f"{out}/a", b_cat, rest[0] if rest else "", 1, 0, 1.0, out, root.name))
        gone.update(id(n) for n in inner + [made[v] for v, _ in pairs] + ([moved] if moved else []))
        at_root[id(root)] = new
    if not at_root:
        return graph
    nodes = [n for node in graph.nodes for n in at_root.get(id(node), [node] if id(node) not in gone else [])]
    new_types = dict(types)
    for node in nodes:
        if node.op == "Concat" and node.outputs[0] not in new_types:
            rows = sum(types[i].shape[0] for i in node.inputs)
            new_types[node.outputs[0]] = replace(types[node.inputs[0]], shape=(rows,) + shape(node.inputs[0])[1:])
    return graph.with_nodes(nodes, types=new_types)


def transpose_gemm_products(graph):
    """Gives: Transpose(Gemm(a, b, transA=1)) (2-D, no C, read only there) as
    Gemm(b, a, transA=not transB, transB=0), named as the Transpose's output."""
    types, made, users = graph.types, graph.producers(), graph.consumers()
    swap, gone = {}, set()
    for node in graph.nodes:
        src = _transposed_2d(node, types)
        p = made.get(src) if src else None
        g = _plain_gemm(p, types) if p is not None and len(users.get(src, ())) == 1 else None
        if g and not g[2] and g[3] == 1 and src not in graph.output_names():
            a, b, _, _, tb, alpha = g
            swap[id(node)] = _gemm(b, a, "", 1 - tb, 0, alpha, node.outputs[0], node.name)
            gone.add(id(p))
    if not swap:
        return graph
    return graph.with_nodes([swap.get(id(n), n) for n in graph.nodes if id(n) not in gone])


def _perm(node, rank):
    return tuple(node.attrs.get("perm") or range(rank)[::-1])


def compose_transposes(graph):
    """Gives: Transpose(Transpose(x, p), q) as Transpose(x, p[q]), or x itself when
    that is the identity (an Identity node where it is a graph output)."""
    made, outputs = graph.producers(), set(graph.output_names())
    rename, nodes = {}, []
    for node in graph.nodes:
        node = replace(node, inputs=tuple(rename.get(i, i) for i in node.inputs))
        inner = made.get(node.inputs[0]) if node.op == "Transpose" else None
        if inner is not None and inner.op == "Transpose":
            rank = graph.types[node.inputs[0]].rank
            p, q = _perm(inner, rank), _perm(node, rank)
            perm = tuple(p[i] for i in q)
            src = rename.get(inner.inputs[0], inner.inputs[0])
            if perm != tuple(range(rank)):
                node = Node("Transpose", (src,), node.outputs, {"perm": perm}, node.name)
            elif node.outputs[0] in outputs:
                node = Node("Identity", (src,), node.outputs, {}, node.name)
            else:
                rename[node.outputs[0]] = src
                continue
        nodes.append(node)
    return graph.with_nodes(nodes)


def fold_batched_transposes(graph):
    """Gives: a batched MatMul (rank > 2, operands of one batch shape: attention's
    heads) reading Transpose(x, p) reads x through perm_a = p (A is read one element
    at a time: any p) or perm_b = p (B by rows: p keeping the last axis last), and
    one whose only use is Transpose(., q) keeping the last axis writes it directly
    (perm_out = q): the copies around the heads' products go."""
    types, made, users = graph.types, graph.producers(), graph.consumers()
    outputs, nodes, gone = set(graph.output_names()), [], set()
    for node in graph.nodes:
        if id(node) in gone:
            continue
        rank = types[node.outputs[0]].rank
        if node.op != "MatMul" or rank < 3 or node.attrs or types[node.outputs[0]].dtype.value not in _FLOAT or \
                any(types[i].rank != rank for i in node.inputs) or \
                types[node.inputs[0]].shape[:-2] != types[node.inputs[1]].shape[:-2]:
            nodes.append(node)
            continue
        inputs, attrs = list(node.inputs), {}
        for k, key in enumerate(("perm_a", "perm_b")):
            src = made.get(inputs[k])
            if src is not None and src.op == "Transpose":
                perm = _perm(src, rank)
                if k == 0 or perm[-1] == rank - 1:
                    inputs[k], attrs[key] = src.inputs[0], perm
        out, after = node.outputs, users.get(node.outputs[0], [])
        if len(after) == 1 and after[0].op == "Transpose" and out[0] not in outputs and \
                _perm(after[0], rank)[-1] == rank - 1:
            attrs["perm_out"], out = _perm(after[0], rank), after[0].outputs
            gone.add(id(after[0]))
        nodes.append(replace(node, inputs=tuple(inputs), outputs=out, attrs=attrs) if attrs else node)
    return graph.with_nodes(nodes)


def simplify_gemm_transposes(graph):
    """Needs: a verified graph, before fusion. Gives: the three rewrites above, then
    Transposes read by nobody gone (eliminate_dead_code runs after), then a batched
    product's Transposes folded into it (fold_batched_transposes)."""
    for step in (compose_transposes, fold_transposes, merge_gradient_sums, transpose_gemm_products,
                 fold_transposes, fold_batched_transposes):
        graph = step(graph)
    return graph
