"""PackPanels: a 2-D B laid out at run time in the GEMM's panels, the layout
schedule/gemm.py's prepack() makes at compile time for constant weights.

A recurrent net's weight (W_hh of a GRU, an RNN or an LSTM with sequence
lengths; a plain LSTM's is packed inside LSTMSequence) is an input of the training
step, read by one GEMM per time step forward and one back: each would pack it again
(a copy of the whole matrix per step, a third of the step's GEMM time at 32 rows).
passes/recurrent.py's pack_shared_weights packs it once with this op and the
GEMMs read the panels (MatMulPacked).

PackPanels(B [k, n]; kc, panel) -> [ceil(k / kc), ceil(n / panel), kc, panel],
zero-padded at both edges."""
from ..lower.loop_ir import Const
from ..schedule.gemm import panels_of
from .common import fail, require_float, tt
from .registry import non_differentiable, register


def _ceil(a, b):
    return -(-a // b)


def _infer(attrs, types, consts, node):
    b = types[0]
    require_float(node, b)
    kc, panel = attrs["kc"], attrs["panel"]
    if b.rank != 2 or not all(isinstance(v, int) and v > 0 for v in (kc, panel)):
        fail(node, f"PackPanels needs a 2-D B and positive kc, panel; got {b.shape}, {kc}, {panel}")
    k, n = b.shape
    return [tt(b.dtype, (_ceil(k, kc), _ceil(n, panel), kc, panel))]


def _reference(attrs, b):
    return panels_of(b, attrs["kc"], attrs["panel"])


def pack_into(ctx, src, out, k, n, kc, panel):
    """Emit B [k, n] (row-major `src`) packed into `out` as _reference lays it out:
    the padding zeroed, then B's rows copied panel by panel (a contiguous run of
    `panel` floats in both layouts)."""
    nb, lanes = ctx.nb, ctx.lanes(out.dtype)
    k_blocks, panels = _ceil(k, kc), _ceil(n, panel)
    if k % kc or n % panel:
        with nb.loop(k_blocks * panels * kc * panel, "vector", lanes, hint="z") as i:
            nb.store(out, i, Const(0.0, out.dtype))
    whole, edge = divmod(n, panel)
    for kb in range(k_blocks):
        with nb.loop(min(kc, k - kb * kc), hint="k") as kk:
            row = kb * kc + kk
            for first, count, width in ((0, whole, panel), (whole, 1 if edge else 0, edge)):
                if not count:
                    continue
                with nb.loop(count, hint="p") as p:
                    at = ((kb * panels + p + first) * kc + kk) * panel
                    with nb.loop(width, "vector", lanes, hint="c") as j:
                        nb.store(out, at + j, src[row * n + (p + first) * panel + j])


def _lower(ctx):
    k, n = ctx.in_types[0].shape
    pack_into(ctx, ctx.inputs[0], ctx.outputs[0], k, n, ctx.attrs["kc"], ctx.attrs["panel"])


register("PackPanels", inputs=(1, 1), attrs={"kc": None, "panel": None}, infer=_infer, reference=_reference,
         lower=_lower, domain="nutshell")
non_differentiable("made after autodiff (a shared GEMM operand packed once per run)", "PackPanels")
