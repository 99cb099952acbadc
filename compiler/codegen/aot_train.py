"""AOT training bundles: the compiled training step and an evaluation model over
one caller-owned state region, so a C program keeps training with no Python.

State region (NAME_STATE_SIZE bytes, 64-byte aligned):
    [0, 64)   header: magic (a hash of this bundle's layout, so a state from another
              bundle is refused), step counter, which copy is live (0 or 1), the
              region's size; every entry point checks them all before it reads
              or writes through the state (BAD_INPUTS row 32)
    then two copies of every state tensor (parameters, optimizer slots, running
    statistics); a step reads the live copy, writes the other and flips."""
import hashlib

import numpy as np
from llvmlite import ir

from . import llvm_helpers as H
from .aot import Checks, add_constants, add_error_strings

HEADER = 64
MAGIC_AT, STEP_AT, LIVE_AT, SIZE_AT = 0, 8, 16, 24     # header fields' byte offsets
ERR_STATE, ERR_LABEL, ERR_INDEX = 4, 5, 6


def state_layout(graph, names):
    """Offsets of each state tensor inside one copy, and the copy's size."""
    offsets, size = {}, 0
    for n in names:
        offsets[n] = size
        size += -(-graph.types[n].nbytes // 64) * 64
    return offsets, max(size, 64)


def layout_magic(name, graph, offsets, copy_size):
    """64 bits that change with the bundle's name and every state tensor's name,
    type and offset: a state from another bundle fails the check."""
    h = hashlib.sha256(repr((name, copy_size, [(n, str(graph.types[n]), off)
                                               for n, off in offsets.items()])).encode())
    return int.from_bytes(h.digest()[:8], "little") | 1      # never 0, the value of zeroed memory


class _Fn:
    def __init__(self, module, name, args):
        self.fn = ir.Function(module, ir.FunctionType(H.I32, args), name=name)
        self.b = ir.IRBuilder(self.fn.append_basic_block("entry"))
        self.check = Checks(self.b, self.fn)

    def field(self, state, offset, ty):
        return self.b.gep(state, [ir.Constant(H.I64, offset)], source_etype=H.I8), ty

    def load(self, state, offset, ty):
        ptr, ty = self.field(state, offset, ty)
        return self.b.load(ptr, typ=ty)

    def store(self, value, state, offset):
        self.b.store(value, self.field(state, offset, value.type)[0])

    def live_copy(self, state, copy_size, flip=False):
        """Pointer to the live copy (or the other one)."""
        parity = self.load(state, LIVE_AT, H.I32)
        if flip:
            parity = self.b.xor(parity, ir.Constant(H.I32, 1))
        off = self.b.add(ir.Constant(H.I64, HEADER),
                         self.b.mul(self.b.zext(parity, H.I64), ir.Constant(H.I64, copy_size)))
        return self.b.gep(state, [off], source_etype=H.I8)

    def check_state(self, state, magic, state_size):
        """This bundle's initialised state, uncorrupted: else ERR_STATE, nothing touched."""
        self.check.null(state)
        self.check.aligned(state, 64)
        for at, ty, cmp, value in ((MAGIC_AT, H.I64, "!=", magic), (SIZE_AT, H.I64, "!=", state_size),
                                   (LIVE_AT, H.I32, ">", 1)):
            field = self.load(state, at, ty)
            self.check.fail_if(self.b.icmp_unsigned(cmp, field, ir.Constant(ty, value)), ERR_STATE)
        step = self.load(state, STEP_AT, H.I64)
        self.check.fail_if(self.b.icmp_signed("<", step, ir.Constant(H.I64, 0)), ERR_STATE)

    def enter_step(self, graph, layout, args, lr, geometry):
        """Checks a step's state and (input, labels, output, workspace) pointers; returns
        the live and next state copies and the step graph's special inputs by name."""
        state, x, labels, out, workspace = args
        magic, state_size, copy_size = geometry
        self.check_state(state, magic, state_size)
        for p, align in ((x, 4), (labels, 8 if layout["class_labels"] else 4), (out, 4), (workspace, 64)):
            self.check.null(p)
            self.check.aligned(p, align)
        if layout["class_labels"]:
            _check_labels(self, labels, graph.types[layout["labels"]].size, layout["classes"])
        live, other = self.live_copy(state, copy_size), self.live_copy(state, copy_size, flip=True)
        lr_slot = H.alloca(self.b, H.F32)
        self.b.store(lr, lr_slot)
        special = {layout["input"]: x, layout["labels"]: labels, layout["lr"]: lr_slot,
                   layout["step"]: self.field(state, STEP_AT, H.I64)[0]}
        return live, other, special

    def pointer_table(self, pointers):
        table = H.alloca(self.b, ir.ArrayType(H.PTR, max(1, len(pointers))))
        for i, p in enumerate(pointers):
            self.b.store(p, self.b.gep(table, [ir.Constant(H.I64, i)], source_etype=H.PTR))
        return table


def add_training_api(module, name, train, evaluate, layout, initial, threads):
    """train/evaluate: (graph, ModelCode); layout: the training layout; initial: name ->
    array of the starting state. Returns the numbers the header needs."""
    tgraph, tcode = train
    egraph, ecode = evaluate
    offsets, copy_size = state_layout(tgraph, layout["state"])
    magic, state_size = layout_magic(name, tgraph, offsets, copy_size), HEADER + 2 * copy_size
    memcpy = H.intrinsic(module, "llvm.memcpy.p0.p0.i64", H.VOID, [H.PTR, H.PTR, H.I64, H.I1])
    blob = np.zeros(copy_size, np.uint8)
    for n, off in offsets.items():
        data = np.ascontiguousarray(initial[n]).view(np.uint8).reshape(-1)
        blob[off:off + data.size] = data
    init_blob = add_constants(module, f"{name}_initial", [blob])
    t_consts = add_constants(module, f"{name}_train", tcode.constants)
    e_consts = add_constants(module, f"{name}_eval", ecode.constants)
    false = ir.Constant(H.I1, 0)

    # int NAME_init_state(void *state)
    f = _Fn(module, f"{name}_init_state", [H.PTR])
    state = f.fn.args[0]
    f.check.null(state)
    f.check.aligned(state, 64)
    src = f.b.load(f.b.gep(init_blob, [ir.Constant(H.I64, 0)], source_etype=H.PTR), typ=H.PTR)
    f.b.call(memcpy, [f.b.gep(state, [ir.Constant(H.I64, HEADER)], source_etype=H.I8), src,
                      ir.Constant(H.I64, copy_size), false])
    f.store(ir.Constant(H.I64, magic), state, MAGIC_AT)
    f.store(ir.Constant(H.I64, 0), state, STEP_AT)
    f.store(ir.Constant(H.I32, 0), state, LIVE_AT)
    f.store(ir.Constant(H.I64, state_size), state, SIZE_AT)
    f.b.ret(ir.Constant(H.I32, 0))

    # int NAME_train_step(void *state, const float *input, const int64_t *labels,
    #                     float learning_rate, void *workspace, float *loss)
    f = _Fn(module, f"{name}_train_step", [H.PTR, H.PTR, H.PTR, H.F32, H.PTR, H.PTR])
    state, x, labels, lr, workspace, loss = f.fn.args
    live, other, special = f.enter_step(tgraph, layout, (state, x, labels, loss, workspace), lr,
                                        (magic, state_size, copy_size))
    at = lambda base, n: f.b.gep(base, [ir.Constant(H.I64, offsets[n])], source_etype=H.I8)
    ins = [special[v.name] if v.name in special else at(live, v.name) for v in tgraph.inputs]
    outs = [loss] + [at(other, n) for n in layout["state"]]
    code = f.b.call(module.get_global(tcode.entry), [f.pointer_table(ins), f.pointer_table(outs),
                                                     workspace, t_consts, ir.Constant(H.I32, threads)])
    f.store(f.b.xor(f.load(state, LIVE_AT, H.I32), ir.Constant(H.I32, 1)), state, LIVE_AT)
    f.store(f.b.add(f.load(state, STEP_AT, H.I64), ir.Constant(H.I64, 1)), state, STEP_AT)
    f.b.ret(code)

    # int NAME_run(const void *state, const float *input, float *output, void *workspace)
    f = _Fn(module, f"{name}_run", [H.PTR, H.PTR, H.PTR, H.PTR])
    state, x, y, workspace = f.fn.args
    f.check_state(state, magic, state_size)
    for p, align in ((x, 4), (y, 4), (workspace, 64)):
        f.check.null(p)
        f.check.aligned(p, align)
    live = f.live_copy(state, copy_size)
    ins = [x if v.name == egraph.inputs[0].name else
           f.b.gep(live, [ir.Constant(H.I64, offsets[v.name])], source_etype=H.I8) for v in egraph.inputs]
    f.b.ret(f.b.call(module.get_global(ecode.entry), [f.pointer_table(ins), f.pointer_table([y]), workspace,
                                                      e_consts, ir.Constant(H.I32, threads)]))

    # int NAME_get_param(const void *state, int index, float *dst) / NAME_set_param(state, index, src)
    params = layout["params"]
    for verb in ("get", "set"):
        f = _Fn(module, f"{name}_{verb}_param", [H.PTR, H.I32, H.PTR])
        state, index, buf = f.fn.args
        f.check_state(state, magic, state_size)
        f.check.null(buf)
        f.check.aligned(buf, 4)
        f.check.fail_if(f.b.icmp_unsigned(">=", index, ir.Constant(H.I32, len(params))), ERR_INDEX)
        live = f.live_copy(state, copy_size)
        offs = _table(module, f"{name}_param_offsets", [offsets[p] for p in params])
        sizes = _table(module, f"{name}_param_bytes", [tgraph.types[p].nbytes for p in params])
        idx = f.b.zext(index, H.I64)
        off = f.b.load(f.b.gep(offs, [idx], source_etype=H.I64), typ=H.I64)
        nbytes = f.b.load(f.b.gep(sizes, [idx], source_etype=H.I64), typ=H.I64)
        where = f.b.gep(live, [off], source_etype=H.I8)
        dst, src = (buf, where) if verb == "get" else (where, buf)
        f.b.call(memcpy, [dst, src, nbytes, false])
        f.b.ret(ir.Constant(H.I32, 0))
    add_error_strings(module, name)
    return {"state_size": state_size,
            "workspace": max(tcode.plan.arena_size, ecode.plan.arena_size)}


def _table(module, gname, values):
    gv = module.globals.get(gname)
    if gv is None:
        gv = ir.GlobalVariable(module, ir.ArrayType(H.I64, max(1, len(values))), name=gname)
        gv.global_constant, gv.linkage = True, "internal"
        gv.initializer = ir.Constant(ir.ArrayType(H.I64, max(1, len(values))), values or [0])
    return gv


def _check_labels(f, labels, count, classes):
    """Every class index in [0, classes): else ERR_LABEL, before anything is written."""
    bad = [None]

    def body(i, carried):
        v = f.b.load(f.b.gep(labels, [i], source_etype=H.I64), typ=H.I64)
        out = f.b.or_(f.b.icmp_signed("<", v, ir.Constant(H.I64, 0)),
                      f.b.icmp_signed(">=", v, ir.Constant(H.I64, classes)))
        return [f.b.or_(carried[0], out)]
    bad = H.counted_loop(f.b, count, body, [ir.Constant(H.I1, 0)], name="labels")[0]
    f.check.fail_if(bad, ERR_LABEL)
