"""The op registry: each op declared once, with everything the compiler needs.

An OpDef holds the op's attributes and their defaults, its shape/dtype rule, its
NumPy reference (the oracle of every test), its lowering to loop IR and a slot
for its gradient (VJP) rule. One file per op family registers its ops.
"""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import ShapeError, UnsupportedOpError

_REGISTRY = {}


@dataclass
class OpDef:
    name: str
    infer: Callable            # (attrs, in_types, const_inputs, node_name) -> [TensorType]
    reference: Callable        # (attrs, *arrays) -> np.ndarray | tuple of them
    lower: Optional[Callable] = None   # (LowerContext) -> None; None: fold-only op
    grad: Optional[Callable] = None    # VJP rule, attached by @gradient beside the op
    attrs: dict = field(default_factory=dict)   # name -> default (None: required)
    inputs: tuple = (1, 1)     # (min, max) number of inputs
    alias: bool = False        # output is input 0 reinterpreted (Reshape & co.): no copy
    domain: str = ""
    type_fold: Optional[Callable] = None   # (attrs, in_types) -> array: Shape & co.
    expr: Optional[Callable] = None  # (attrs, *loop-IR values) -> value: an element-wise op,
    #                                  fusable into one loop with its neighbours
    variant: Optional[Callable] = None   # (node, in_types, consts, target) -> the schedule's variant
    #                                  record (schedule/variants.py), read by the lowering as ctx.variant

    def normalize_attrs(self, attrs, num_inputs, node=None):
        unknown = set(attrs) - set(self.attrs)
        if unknown:
            raise UnsupportedOpError(self.name, detail=f"unknown attribute(s) {sorted(unknown)}")
        lo, hi = self.inputs
        if not lo <= num_inputs <= hi:
            raise ShapeError(f"{self.name} takes {lo} to {hi} inputs, got {num_inputs}")
        for key in FLAGS.intersection(attrs):
            if attrs[key] not in (0, 1):     # 2 is not "true": a model relying on it is hostile
                raise ShapeError(f"{node or self.name}: attribute {key} must be 0 or 1, got {attrs[key]!r}")
        full = {k: v for k, v in self.attrs.items() if v is not None}
        full.update(attrs)
        return full


FLAGS = frozenset({"ceil_mode", "count_include_pad", "keepdims", "select_last_index", "allowzero",
                   "noop_with_empty_axes", "fmod", "transA", "transB", "antialias", "exclude_outside"})
FOLD_BUDGET_BYTES = 1 << 30    # a folded constant larger than this is a hostile model
FOLD_TOTAL_BUDGET_BYTES = 4 << 30    # ... and so are a graph's folded constants together


class FoldBudget:
    """Bytes folded so far in one graph: many folds, each under the per-node budget,
    must not add up to unbounded memory (BAD_INPUTS row 15)."""

    def __init__(self):
        self.spent = 0

    def charge(self, nbytes, op, node_name):
        if nbytes > FOLD_BUDGET_BYTES:
            raise ShapeError(f"node '{node_name}' ({op}) would make a constant of {nbytes} "
                             f"bytes, over the budget of {FOLD_BUDGET_BYTES}")
        if self.spent + nbytes > FOLD_TOTAL_BUDGET_BYTES:
            raise ShapeError(f"node '{node_name}' ({op}) would bring the folded constants to "
                             f"{self.spent + nbytes} bytes, over the total budget of "
                             f"{FOLD_TOTAL_BUDGET_BYTES}")
        self.spent += nbytes


def fold(opdef, attrs, in_types, consts, out_types, node_name, budget=None):
    """The node's outputs as arrays if they are known at compile time (all inputs
    constant, or a result that depends only on types, as Shape's), else None.
    `budget` (one FoldBudget per graph) bounds the bytes of all folds together."""
    if opdef.type_fold is not None:
        return [opdef.type_fold(attrs, in_types)]
    present = [c for t, c in zip(in_types, consts) if t is not None]
    if any(c is None for c in present):
        return None
    (budget or FoldBudget()).charge(sum(t.nbytes for t in out_types), opdef.name, node_name)
    args = list(consts)
    while args and args[-1] is None:
        args.pop()
    result = opdef.reference(attrs, *args)
    values = result if isinstance(result, tuple) else (result,)
    return [np.asarray(v, dtype=t.dtype.numpy, order="C").reshape(t.shape)
            for v, t in zip(values, out_types)]


def register(name, *, infer, reference, lower=None, attrs=None, inputs=(1, 1), alias=False,
             domain="", type_fold=None, expr=None, grad=None, variant=None):
    if name in _REGISTRY:
        raise ValueError(f"op {name} registered twice")
    _REGISTRY[name] = OpDef(name, infer, reference, lower, grad, dict(attrs or {}), inputs,
                            alias, domain, type_fold, expr, variant)
    return _REGISTRY[name]


def gradient(*names):
    """Decorator placed right below an op's register call: attaches the VJP rule
    fn(g: GradContext, node, dys, wanted) -> one gradient value name (or None) per input."""
    def attach(fn):
        for name in names:
            if _REGISTRY[name].grad is not None:
                raise ValueError(f"op {name} has two gradient rules")
            _REGISTRY[name].grad = fn
        return fn
    return attach


def zero_gradient(g, node, dys, wanted):
    """Piecewise-constant ops (comparisons, Floor, Shape): zero gradient almost everywhere."""
    return [None] * len(node.inputs)


NON_DIFFERENTIABLE = {}     # op name -> why autodiff has no rule for it


def non_differentiable(reason, *names):
    for name in names:
        NON_DIFFERENTIABLE[name] = reason


def get_op(name, opset=None):
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnsupportedOpError(name, opset) from None


def has_op(name):
    return name in _REGISTRY


def all_ops():
    return dict(_REGISTRY)
