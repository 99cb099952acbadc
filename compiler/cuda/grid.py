"""Map a loop-IR kernel onto GPU launches.

A kernel's top-level statements run in order, each one a launch (kernel
boundaries are the grid-wide barriers between them). A top-level loop whose
iterations are independent (the lowering's `parallel` loops, or a serial loop
that independence.py proves so) becomes a grid of one thread per iteration;
while its body is one such loop, that loop joins the grid too (the flat
thread id split into both variables). Any other statement runs on one thread
(consecutive ones merged into one launch). A loop that indexes
per-thread scratch by THREAD_INDEX (the CPU's packing buffers) has one slot:
it stays on one thread too. Inner loops run serially inside each thread."""
from dataclasses import dataclass, field

from .independence import independent
from .target import BLOCK_THREADS
from .tiled import THREADS as TILE_THREADS, TiledGemm, grid_of as tiled_grid
from .warp import LANES, warp_worthy
from ..lower.loop_ir import THREAD_INDEX, Bin, Call, For, Load, Reduce, Select, Store, Transpose, Var


@dataclass
class Launch:
    name: str
    body: list                 # statements each thread runs
    extent: int = 1            # threads (grid size)
    index_vars: list = field(default_factory=list)   # [(Var, extent)], outermost first: the flat
    #                                                  thread id split into these loop variables
    tiled: object = None       # a TiledGemm: blocks of tiled.THREADS sharing memory tiles
    warp: bool = False         # each index a warp of 32 lanes (warp.py): extent counts lanes

    @property
    def grid(self):
        return tiled_grid(self.tiled) if self.tiled is not None else (-(-self.extent // BLOCK_THREADS), 1, 1)

    @property
    def block(self):
        return (TILE_THREADS if self.tiled is not None else min(BLOCK_THREADS, self.extent), 1, 1)


def launches(kernel):
    out, serial, prefix = [], [], []

    def flush():
        if serial:
            out.append(Launch(f"{kernel.name}_l{len(out)}", list(serial), 1, list(prefix)))
            serial.clear()

    def visit(stmts):
        for stmt in stmts:
            if isinstance(stmt, TiledGemm):
                flush()
                out.append(Launch(f"{kernel.name}_l{len(out)}", [stmt], tiled=stmt))
            elif isinstance(stmt, For) and stmt.extent == 1 and stmt.limit is None and stmt.kind != "vector":
                flush()                     # a loop of one trip (batch 1): its statements are top level
                prefix.append((stmt.var, 1))
                visit(stmt.body)
                flush()
                prefix.pop()
            elif isinstance(stmt, For) and _parallel(stmt, [v.name for v, _ in prefix]):
                flush()
                out.append(_grid_launch(f"{kernel.name}_l{len(out)}", stmt, prefix))
            elif isinstance(stmt, Store) and warp_worthy([stmt], [v.name for v, _ in prefix]):
                flush()                     # one long reduction (a loss, a batch-1 norm): one warp
                out.append(Launch(f"{kernel.name}_l{len(out)}", [stmt], LANES, list(prefix), warp=True))
            else:
                serial.append(stmt)
    visit(kernel.body)
    flush()
    return out


def _grid_launch(name, stmt, prefix):
    """stmt's iterations (and those of the independent loops nested alone in it) as threads."""
    index_vars, body = list(prefix) + [(stmt.var, stmt.extent)], stmt.body
    while len(body) == 1 and isinstance(body[0], For) and _parallel(body[0], [v.name for v, _ in index_vars]):
        index_vars.append((body[0].var, body[0].extent))
        body = body[0].body
    extent = 1
    for _, e in index_vars:
        extent *= e
    warp = warp_worthy(body, [v.name for v, _ in index_vars])
    return Launch(name, body, extent * (LANES if warp else 1), index_vars, warp=warp)


def _parallel(loop, fixed):
    if loop.limit is not None or uses_var(loop.body, THREAD_INDEX.name):
        return False
    if loop.kind == "parallel":
        return True
    return independent(loop, fixed)


def uses_var(stmts, name):
    return any(_stmt_uses(s, name) for s in stmts)


def _stmt_uses(s, name):
    if isinstance(s, For):
        return (s.limit is not None and _expr_uses(s.limit, name)) or uses_var(s.body, name)
    if isinstance(s, Store):
        return any(_expr_uses(e, name) for e in (s.index, s.value, s.mask) if e is not None)
    if isinstance(s, Transpose):
        return any(_expr_uses(e, name) for e in (s.src_index, s.src_stride, s.dst_index, s.dst_stride))
    return True     # unknown statement: assume the worst


def _expr_uses(e, name):
    if isinstance(e, Var):
        return e.name == name
    if isinstance(e, Bin):
        return _expr_uses(e.a, name) or _expr_uses(e.b, name)
    if isinstance(e, Call):
        return any(_expr_uses(a, name) for a in e.args)
    if isinstance(e, Select):
        return any(_expr_uses(x, name) for x in (e.cond, e.a, e.b))
    if isinstance(e, Load):
        return _expr_uses(e.index, name) or (e.mask is not None and _expr_uses(e.mask, name))
    if isinstance(e, Reduce):
        return _expr_uses(e.body, name)
    return False
