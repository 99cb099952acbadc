"""Tensor indexing as torch does it: ints, slices (with steps), None, `...`, and
one integer index tensor (or list), composed from Slice, a row gather and one
Reshape."""
import numpy as np

from nutshell.compiler.errors import UnsupportedOpError
from nutshell.compiler.ir.types import DType
from nutshell.compiler.ops import get_op

from . import tensor as T
from .tensor_ops import axis as norm_axis, permute, reshape


def _expand_ellipsis(x, index):
    """The index with `...` (or the missing trailing dims) as full slices."""
    at = [k for k, i in enumerate(index) if i is Ellipsis]
    consuming = sum(1 for i in index if i is not None and i is not Ellipsis)
    if len(at) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if consuming > x.ndim:
        raise IndexError(f"too many indices ({consuming}) for a tensor of rank {x.ndim}")
    fill = (slice(None),) * (x.ndim - consuming)
    return index[:at[0]] + fill + index[at[0] + 1:] if at else index + fill


def getitem(x, index):
    """One Slice for the ints and slices, one Reshape dropping the ints' axes,
    a gather for the index tensors, one Reshape inserting the None axes."""
    index = _expand_ellipsis(x, index if isinstance(index, tuple) else (index,))
    starts, ends, axes, steps = [], [], [], []
    kept, advanced, layout, d = [], [], [], 0
    for item in index:
        if item is None:
            layout.append(1)
            continue
        n = x.shape[d]
        if isinstance(item, (bool, np.bool_)):
            raise UnsupportedOpError("getitem", detail="boolean scalar indices")
        if isinstance(item, (int, np.integer)):
            i = int(item)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for dimension {d} with size {n}")
            starts, ends, axes, steps = starts + [i % n], ends + [i % n + 1], axes + [d], steps + [1]
        elif isinstance(item, slice):
            start, stop, step = item.indices(n)
            if step <= 0:
                raise ValueError("step must be greater than zero")
            if (start, stop, step) != (0, n, 1):
                starts, ends, axes, steps = starts + [start], ends + [stop], axes + [d], steps + [step]
            kept.append(len(range(start, stop, step)))
            layout.append(kept[-1])
        else:
            advanced.append((len(kept), _index_tensor(x, item)))
            kept.append(n)
            layout.append("advanced")
        d += 1
    if starts:
        x = T.apply("Slice", [x] + [_ints(x, v) for v in (starts, ends, axes, steps)])
    x = reshape(x, kept)
    if not advanced:
        return reshape(x, layout)
    x, block, in_place = _gather_block(x, advanced)
    final, placed = ([], False) if in_place else (list(block), True)
    for entry in layout:
        if entry != "advanced":
            final.append(entry)
        elif not placed:
            final.extend(block)
            placed = True
    return reshape(x, final)


def _index_tensor(x, item):
    idx = T.tensor_of(item, x.builder, DType.int64)
    if idx.dtype not in (DType.int64, DType.int32):
        raise UnsupportedOpError("getitem", detail=f"{idx.dtype.value} index tensors "
                                 "(boolean masks give data-dependent shapes; use where)")
    return idx.long()


def _gather_block(x, advanced):
    """Index tensors on several axes, as numpy and torch do: their broadcast shape
    replaces those axes where they are adjacent, and leads the result otherwise.
    The axes are merged into one and gathered by the row-major linear index."""
    positions = [p for p, _ in advanced]
    in_place = positions == list(range(positions[0], positions[0] + len(positions)))
    if not in_place:
        x = permute(x, positions + [i for i in range(x.ndim) if i not in positions])
        positions = list(range(len(positions)))
    first, sizes = positions[0], x.shape[positions[0]:positions[0] + len(positions)]
    block = tuple(np.broadcast_shapes(*[idx.shape for _, idx in advanced]))
    linear = None
    for (_, idx), n, stride in zip(advanced, sizes, np.cumprod((1,) + sizes[::-1])[::-1][1:]):
        idx = T.apply("Where", [idx < 0, idx + n, idx])
        term = idx * int(stride) if stride != 1 else idx
        linear = term if linear is None else linear + term
    if linear.shape != block:
        linear = linear.expand(block)
    x = reshape(x, x.shape[:first] + (-1,) + x.shape[first + len(sizes):])
    return take(x, linear, first), block, in_place


def setitem(x, index, value):
    """x with x[index] = value, as a new tensor (Tensor.__setitem__ rebinds x to
    it). With values known (eager tensors) NumPy assigns; on a traced tensor the
    index may hold ints and step-1 slices (a box): the value, broadcast to the
    box and padded to x's shape, replaces x where a constant mask is set."""
    index = index if isinstance(index, tuple) else (index,)
    traced_value = isinstance(value, T.Tensor) and value.name not in value.builder.constants
    if x.name in x.builder.constants and not traced_value:
        array = T.value_of(x).copy()
        array[tuple(T.value_of(i) if isinstance(i, T.Tensor) else i for i in index)] = \
            T.value_of(value) if isinstance(value, T.Tensor) else value
        return T.constant(x.builder, array)
    begin, end, view = [], [], []
    for d, item in enumerate(_expand_ellipsis(x, index)):
        n = x.shape[d] if d < x.ndim else 0
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool) and -n <= item < n:
            begin, end = begin + [int(item) % n], end + [int(item) % n + 1]
        elif isinstance(item, slice) and item.indices(n)[2] == 1:
            start, stop, _ = item.indices(n)
            begin, end, view = begin + [start], end + [max(start, stop)], view + [max(stop - start, 0)]
        else:
            raise UnsupportedOpError("setitem", detail=f"assigning into a traced tensor at {item!r} "
                                     "(ints and step-1 slices only; use ns.where or masked_fill)")
    v = value.to(x.dtype) if isinstance(value, T.Tensor) else T.tensor_of(value, x.builder, x.dtype)
    if tuple(v.shape) != tuple(view):
        v = v.expand(view)
    v = reshape(v, [e - b for b, e in zip(begin, end)])
    pads = T.constant(x.builder, np.asarray(begin + [n - e for n, e in zip(x.shape, end)], np.int64))
    placed = T.apply("Pad", [v, pads])
    mask = np.zeros(x.shape, bool)
    mask[tuple(slice(b, e) for b, e in zip(begin, end))] = True
    return T.apply("Where", [T.constant(x.builder, mask), placed, x])


def _ints(x, values):
    return T.constant(x.builder, np.asarray(values, np.int64))


def take(x, idx, dim=0):
    """x's entries at the integer tensor `idx` along `dim`: the result has idx's
    dimensions in place of `dim` (torch's x[..., idx, ...] and embedding lookup).
    Negative indices count from the end."""
    d = norm_axis(dim, x.ndim)
    n = x.shape[d]
    idx = T.tensor_of(idx, x.builder, DType.int64)
    if get_op("Gather").lower is not None:
        return T.apply("Gather", [x, idx], axis=d)
    return _take_one_hot(x, idx, d, n)


def _take_one_hot(x, idx, d, n):
    """Gather as a one-hot matrix product: exact (one 1 per row), and it trains
    through MatMul's gradient rule."""
    idx = idx.long()
    idx = T.apply("Where", [idx < 0, idx + n, idx])
    rows = reshape(idx, (-1, 1))
    one_hot = (rows == T.constant(x.builder, np.arange(n, dtype=np.int64))).to(
        x.dtype if x.dtype.is_float else DType.float32)
    rest = [i for i in range(x.ndim) if i != d]
    moved = reshape(permute(x, [d] + rest), (n, -1))
    data = moved if moved.dtype == one_hot.dtype else moved.to(one_hot.dtype)
    out = T.apply("MatMul", [one_hot, data])
    out = out if out.dtype == x.dtype else out.to(x.dtype)
    out = reshape(out, idx.shape + tuple(x.shape[i] for i in rest))
    k = idx.ndim
    order = list(range(k, k + d)) + list(range(k)) + list(range(k + d, out.ndim))
    return permute(out, order)
