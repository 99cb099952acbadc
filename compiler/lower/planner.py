"""Memory planning: where every value lives at run time.

Graph inputs and outputs are the caller's buffers, constants are weights, and
every intermediate (and each kernel's scratch) gets an offset in one arena.
Aliasing ops (Reshape, Flatten, ...) share their input's storage, and a Concat
whose parts are contiguous slices of its result (batch 1, or axis 0) has them
written in place by their producers when it is their only reader (or the other
readers are Concats of a prefix of those parts, which then alias the result). Offsets are
packed greedily by size over liveness intervals (TFLite's greedy-by-size); the
arena's size and the liveness lower bound are both reported."""
from dataclasses import dataclass, field

ALIGN = 64
STATUS_BYTES = ALIGN      # the arena starts with the run's status word (see LowerContext.status)


def _align(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Plan:
    storage: dict           # value name -> ("input", i) | ("output", i) | ("const", j) | ("arena", offset)
    scratch: dict           # node index -> [arena offsets]
    arena_size: int
    lower_bound: int        # max over time of live bytes: no packing can beat it
    copies: set = field(default_factory=set)   # alias nodes that must copy instead
    elided: set = field(default_factory=set)   # Concats whose parts were written in place


def plan_memory(graph, scratch_sizes, const_index, is_alias):
    """scratch_sizes: node index -> [bytes]; const_index: const name -> slot;
    is_alias(op name): whether the op's output shares its input's storage (the op
    registry's flag, passed in: lower/ sits below the ops)."""
    outputs = {v.name: i for i, v in enumerate(graph.outputs)}
    storage = {v.name: ("input", i) for i, v in enumerate(graph.inputs)}
    storage.update({name: ("const", j) for name, j in const_index.items()})
    for name, i in outputs.items():
        storage.setdefault(name, ("output", i))
    root, copies = {}, set()
    for idx, node in enumerate(graph.nodes):
        if is_alias(node.op):
            out, src = node.outputs[0], node.inputs[0]
            if out in outputs:
                copies.add(idx)          # the caller's buffer must receive the bytes
            else:
                root[out] = root.get(src, src)
    offset_in_root, elided = _concats_in_place(graph, root, storage)
    intervals = {}                       # storage root -> [first, last, bytes]
    for idx, node in enumerate(graph.nodes):
        for name in [o for o in node.outputs if o] + [i for i in node.inputs if i]:
            r = _resolve(name, root, offset_in_root)[0]
            if r in storage and storage[r][0] != "arena":
                continue
            span = intervals.setdefault(r, [idx, idx, graph.types[r].nbytes])
            span[1] = max(span[1], idx)
    blocks = [(iv[2], iv[0], iv[1], ("value", r)) for r, iv in intervals.items()]
    for idx, sizes in scratch_sizes.items():
        blocks += [(size, idx, idx, ("scratch", idx, k)) for k, size in enumerate(sizes)]
    offsets, arena = _greedy_by_size(blocks)
    offsets = {k: v + STATUS_BYTES for k, v in offsets.items()}
    arena += STATUS_BYTES
    scratch = {}
    for key, off in offsets.items():
        if key[0] == "value":
            storage[key[1]] = ("arena", off)
        else:
            scratch.setdefault(key[1], []).append((key[2], off))
    for name in root:
        r, offset = _resolve(name, root, offset_in_root)
        kind, where = storage[r]
        storage[name] = (kind, where + offset) if kind == "arena" else (kind, where)
    scratch = {i: [off for _, off in sorted(v)] for i, v in scratch.items()}
    return Plan(storage, scratch, arena, _lower_bound(blocks, len(graph.nodes)), copies, elided)


def _resolve(name, root, offset_in_root):
    """(storage root, byte offset in it): a Concat's part inside a part is nested."""
    offset = 0
    while name in root:
        offset += offset_in_root.get(name, 0)
        name = root[name]
    return name, offset


def _concats_in_place(graph, root, storage):
    """Concats whose every part can live in their result: the part is written by one
    node, read only by the Concat, and a contiguous slice (all dims before the axis
    are 1). Each part becomes an alias of the result at its byte offset.
    A family of Concats whose parts are prefixes of the longest one's (a DenseNet
    block: each layer concatenates the block's input and every earlier layer's
    output) lives in the longest one's result: the shorter ones are its prefixes,
    and a part may be read by any of them."""
    users = graph.consumers()
    candidates = {}                      # node index -> (axis, parts)
    for idx, node in enumerate(graph.nodes):
        if node.op != "Concat" or node.outputs[0] in storage:      # an output: the caller's buffer
            continue
        out_t = graph.types[node.outputs[0]]
        axis = int(node.attrs["axis"]) % out_t.rank      # checked by Concat's shape rule
        if all(d == 1 for d in out_t.shape[:axis]) and len(set(node.inputs)) == len(node.inputs):
            candidates[idx] = (axis, tuple(node.inputs))
    families = {}                        # the longest Concat's index -> its prefixes' indices
    claimed = set()
    for idx in sorted(candidates, key=lambda i: -len(candidates[i][1])):
        if idx not in claimed:
            axis, parts = candidates[idx]
            families[idx] = [j for j in candidates if j not in claimed and j != idx and
                             candidates[j] == (axis, parts[:len(candidates[j][1])])]
            claimed.update(families[idx] + [idx])
    offsets, elided = {}, set()
    aliased = set(root.values())
    for idx in sorted(families):         # graph order: an inner Concat before the one it is part of
        node = graph.nodes[idx]
        members = [j for j in families[idx] if graph.nodes[j].outputs[0] not in root]
        readers = {id(graph.nodes[j]) for j in members + [idx]}
        if any(v in storage or v in root or v in aliased or v in offsets or
               any(id(u) not in readers for u in users.get(v, [])) for v in node.inputs):
            continue
        at = 0
        for v in node.inputs:
            root[v], offsets[v] = node.outputs[0], at
            at += graph.types[v].nbytes
        for j in members:
            root[graph.nodes[j].outputs[0]] = node.outputs[0]
        elided.update(members + [idx])
    return offsets, elided


def _greedy_by_size(blocks):
    placed, offsets, arena = [], {}, 0
    for size, first, last, key in sorted(blocks, key=lambda b: (-b[0], b[1])):
        size = _align(max(size, 1))
        busy = sorted((off, off + sz) for off, sz, f, l in placed if not (l < first or f > last))
        offset = 0
        for start, end in busy:
            if offset + size <= start:
                break
            offset = max(offset, end)
        placed.append((offset, size, first, last))
        offsets[key] = offset
        arena = max(arena, offset + size)
    return offsets, arena


def _lower_bound(blocks, steps):
    live = [0] * max(steps, 1)
    for size, first, last, _ in blocks:
        for t in range(first, last + 1):
            live[t] += _align(max(size, 1))
    return max(live, default=0)
