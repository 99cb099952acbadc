"""Memory planning: where every value lives at run time.

Graph inputs and outputs are the caller's buffers, constants are weights, and
every intermediate (and each kernel's scratch) gets an offset in one arena.
Aliasing ops (Reshape, Flatten, ...) share their input's storage. Offsets are
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


def plan_memory(graph, scratch_sizes, const_index):
    """scratch_sizes: node index -> [bytes]; const_index: const name -> slot."""
    outputs = {v.name: i for i, v in enumerate(graph.outputs)}
    storage = {v.name: ("input", i) for i, v in enumerate(graph.inputs)}
    storage.update({name: ("const", j) for name, j in const_index.items()})
    for name, i in outputs.items():
        storage.setdefault(name, ("output", i))
    from ..ops import get_op
    root, copies = {}, set()
    for idx, node in enumerate(graph.nodes):
        if get_op(node.op).alias:
            out, src = node.outputs[0], node.inputs[0]
            if out in outputs:
                copies.add(idx)          # the caller's buffer must receive the bytes
            else:
                root[out] = root.get(src, src)
    intervals = {}                       # storage root -> [first, last, bytes]
    for idx, node in enumerate(graph.nodes):
        for name in [o for o in node.outputs if o] + [i for i in node.inputs if i]:
            r = root.get(name, name)
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
    for name, r in root.items():
        storage[name] = storage[r]
    scratch = {i: [off for _, off in sorted(v)] for i, v in scratch.items()}
    return Plan(storage, scratch, arena, _lower_bound(blocks, len(graph.nodes)), copies)


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
