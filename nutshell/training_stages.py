"""The `grads` half of a distributed training step cut into stages.

A stage is a compiled function; between stages the distributed trainer talks
to the other ranks. Two things cut the step:
- an AllReduceSum node (SyncBatchNorm's per-channel sums): its input is made in
  one stage, summed across ranks after that stage, and read by later stages;
- a bucket cut: after the node completing a bucket's last gradient, later nodes
  go to a new stage, so the bucket's all-reduce starts while they run (the
  backward pass overlapped with communication, as DDP's buckets).
Nodes are placed as early as their inputs allow (never before the last cut), in
the graph's own order, which autodiff makes the reverse of the forward: the last
layers' gradients are complete first."""
from dataclasses import dataclass

from nutshell.compiler.ir.graph import Graph, Node, Value

SYNC_OP = "AllReduceSum"


@dataclass
class StagePlan:
    graph: Graph        # the whole step, its outputs apart from values that nodes read
    stages: list        # [Graph or None]: stage s's nodes as a graph (None: empty)
    syncs: list         # [[(source value, summed value)]]: the sums after stage s
    ready: dict         # graph output -> the stage after which it is complete (-1: before any)


def outputs_apart(graph):
    """(graph, {output: its copy}): each output that a node also reads replaced by
    a copy made right after it, so that an output may be all-reduced in place
    while later stages run (they read the original)."""
    read = {i for node in graph.nodes for i in node.inputs if i}
    shared = [v.name for v in graph.outputs if v.name in read]
    if not shared:
        return graph, {}
    types, nodes, copies = dict(graph.types), [], {}
    taken = set(types)
    for name in shared:
        copy = f"{name}.out"
        while copy in taken:
            copy += "_"
        taken.add(copy)
        copies[name] = copy
        types[copy] = types[name]
    for node in graph.nodes:
        nodes.append(node)
        for o in node.outputs:
            if o in copies:
                nodes.append(Node("Identity", (o,), (copies[o],), {}, f"copy_{copies[o]}"))
    outputs = [Value(copies.get(v.name, v.name), v.type) for v in graph.outputs]
    return graph.with_nodes(nodes, types=types, outputs=outputs), copies


def completion_order(graph, names):
    """`names` (graph outputs) in the order the graph's nodes complete them."""
    at = {o: i for i, node in enumerate(graph.nodes) for o in node.outputs if o}
    return sorted(names, key=lambda n: at.get(n, -1))


def _place(nodes, cut_after):
    """Each node's stage: after its inputs (one later past an AllReduceSum), and
    not before the last cut passed."""
    ready, stages, floor, top = {}, [], 0, 0
    for node in nodes:
        s = max([floor] + [ready.get(i, 0) for i in node.inputs if i])
        stages.append(s)
        for o in node.outputs:
            if o:
                ready[o] = s + 1 if node.op == SYNC_OP else s
        top = max(top, s)
        if any(o in cut_after for o in node.outputs):
            floor = top + 1
    return stages


def split_stages(graph, cut_after=()):
    """The StagePlan of `graph` cut at its AllReduceSum nodes and after the nodes
    making the values in `cut_after`."""
    staged = cut_after or any(node.op == SYNC_OP for node in graph.nodes)
    graph, copies = outputs_apart(graph) if staged else (graph, {})     # one stage: no race
    stage_of = _place(graph.nodes, {copies.get(c, c) for c in cut_after})
    count = max(stage_of, default=0) + 1
    made_in = {o: s for node, s in zip(graph.nodes, stage_of) if node.op != SYNC_OP
               for o in node.outputs if o}
    wanted = {v.name for v in graph.outputs}              # values a stage must hand on
    syncs = [[] for _ in range(count)]
    for node, s in zip(graph.nodes, stage_of):
        if node.op == SYNC_OP:
            syncs[s].append((node.inputs[0], node.outputs[0]))
            wanted.add(node.inputs[0])
        else:
            wanted.update(i for i in node.inputs if i in made_in and made_in[i] != s)
    stages = [_stage_graph(graph, [n for n, t in zip(graph.nodes, stage_of) if t == s and n.op != SYNC_OP],
                           wanted, f"{graph.name}_stage{s}") for s in range(count)]
    ready = {v.name: made_in.get(v.name, -1) for v in graph.outputs}
    return StagePlan(graph, stages, syncs, ready)


def _stage_graph(graph, nodes, wanted, name):
    made = [o for node in nodes for o in node.outputs if o]
    if not any(o in wanted for o in made):
        return None
    made_here = set(made)
    reads = []
    for node in nodes:
        reads += [i for i in node.inputs if i and i not in made_here and i not in reads]
    constants = {c: graph.constants[c] for c in reads if c in graph.constants}
    inputs = [Value(i, graph.types[i]) for i in reads if i not in constants]
    outputs = [Value(o, graph.types[o]) for o in made if o in wanted]
    types = {v: graph.types[v] for v in reads + made}
    return Graph(name, inputs, outputs, list(nodes), constants, types)


def buckets(graph, layout, cap_bytes):
    """(flat order, buckets, cut_after) for the grads graph's outputs (the loss,
    then layout["state"]: gradients, then buffers' new values): the flat buffer
    holds the loss, the float buffers, then the gradients in the order the
    backward completes them; buckets are consecutive runs of that order of about
    `cap_bytes` (the loss and buffers join the first), each a list of output
    indices; cut_after names each bucket's last gradient but the last bucket's."""
    names = [v.name for v in graph.outputs]
    at = {n: i for i, n in enumerate(names)}
    params = len(layout["params"])
    float_buffers = [i for i in range(1 + params, len(names)) if graph.types[names[i]].dtype.numpy.kind == "f"]
    grads = [at[n] for n in completion_order(graph, names[1:1 + params])]
    order = [0] + float_buffers + grads
    groups, current, size = [], [0] + float_buffers, 0
    for i in grads:
        current.append(i)
        size += graph.types[names[i]].size * 4
        if size >= cap_bytes:
            groups.append(current)
            current, size = [], 0
    if current:
        groups.append(current)
    cuts = [names[group[-1]] for group in groups[:-1]]
    return order, groups, cuts
