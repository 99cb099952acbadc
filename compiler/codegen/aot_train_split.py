"""The AOT training step split for data parallelism: NAME_train_grads and
NAME_train_apply over the same state region as NAME_train_step.

    NAME_train_grads(state, input, labels, workspace, grads)
        forward, loss and backward on this rank's batch; writes NAME_GRADS_COUNT
        floats to `grads`: every parameter's gradient, the new running statistics,
        and the loss last (at NAME_GRADS_LOSS). The state is not advanced.
    NAME_train_apply(state, grads, learning_rate, workspace)
        the optimizer's update from `grads`, which must hold the mean over ranks
        (sum with MPI_Allreduce, then divide by the number of ranks); takes the
        running statistics from it too, then advances the step.

So a C program trains across ranks with its own MPI, as runtime/distributed.py
does in Python. Each segment of `grads` starts 64-byte aligned."""
from llvmlite import ir

from . import llvm_helpers as H
from .aot_train import ERR_STATE, LIVE_AT, STEP_AT, _Fn  # noqa: F401


def grads_layout(graph, layout):
    """(element offset of each gradient / float running statistic in `grads`, the
    loss's offset, the total count); each segment padded to 16 floats."""
    names = layout["params"] + [b for b in layout["buffers"] if graph.types[b].dtype.is_float]
    offsets, at = {}, 0
    for n in names:
        offsets[n] = at
        at += -(-graph.types[n].size // 16) * 16
    return offsets, at, at + 16


def add_split_api(module, name, grads, apply, layout, apply_state, geometry, threads, grad_name):
    """grads/apply: (graph, ModelCode) of the two halves (nutshell/training_split.py);
    geometry: (state offsets, copy size, magic, state size) of the bundle;
    grad_name(param): the apply half's input that carries the param's gradient."""
    from .aot import add_constants
    ggraph, gcode = grads
    agraph, acode = apply
    offsets, copy_size, magic, state_size = geometry
    goffsets, loss_at, count = grads_layout(ggraph, layout)
    memcpy = H.intrinsic(module, "llvm.memcpy.p0.p0.i64", H.VOID, [H.PTR, H.PTR, H.I64, H.I1])
    g_consts = add_constants(module, f"{name}_grads", gcode.constants)
    a_consts = add_constants(module, f"{name}_apply", acode.constants)
    byte = lambda base, off: f.b.gep(base, [ir.Constant(H.I64, off)], source_etype=H.I8)

    # int NAME_train_grads(void *state, const float *input, const labels *, void *workspace, float *grads)
    f = _Fn(module, f"{name}_train_grads", [H.PTR, H.PTR, H.PTR, H.PTR, H.PTR])
    state, x, labels, workspace, out = f.fn.args
    live, other, special = f.enter_step(ggraph, layout, (state, x, labels, out, workspace),
                                        ir.Constant(H.F32, 0.0), (magic, state_size, copy_size))
    ins = [special[v.name] if v.name in special else byte(live, offsets[v.name]) for v in ggraph.inputs]
    outs = [byte(out, 4 * loss_at)]
    for n in layout["params"] + layout["buffers"]:     # integer buffers go to the next copy directly
        outs.append(byte(out, 4 * goffsets[n]) if n in goffsets else byte(other, offsets[n]))
    f.b.ret(f.b.call(module.get_global(gcode.entry), [f.pointer_table(ins), f.pointer_table(outs),
                                                     workspace, g_consts, ir.Constant(H.I32, threads)]))

    # int NAME_train_apply(void *state, const float *grads, float learning_rate, void *workspace)
    f = _Fn(module, f"{name}_train_apply", [H.PTR, H.PTR, H.F32, H.PTR])
    state, grads_in, lr, workspace = f.fn.args
    f.check_state(state, magic, state_size)
    for p, align in ((grads_in, 4), (workspace, 64)):
        f.check.null(p)
        f.check.aligned(p, align)
    live, other = f.live_copy(state, copy_size), f.live_copy(state, copy_size, flip=True)
    lr_slot = H.alloca(f.b, H.F32)
    f.b.store(lr, lr_slot)
    special = {layout["lr"]: lr_slot, layout["step"]: f.field(state, STEP_AT, H.I64)[0]}
    special.update({grad_name(p): byte(grads_in, 4 * goffsets[p]) for p in layout["params"]})
    ins = [special[v.name] if v.name in special else byte(live, offsets[v.name]) for v in agraph.inputs]
    outs = [byte(other, offsets[n]) for n in apply_state]
    code = f.b.call(module.get_global(acode.entry), [f.pointer_table(ins), f.pointer_table(outs),
                                                     workspace, a_consts, ir.Constant(H.I32, threads)])
    for n in layout["buffers"]:                        # the averaged running statistics
        if n in goffsets:
            f.b.call(memcpy, [byte(other, offsets[n]), byte(grads_in, 4 * goffsets[n]),
                              ir.Constant(H.I64, ggraph.types[n].nbytes), ir.Constant(H.I1, 0)])
    f.store(f.b.xor(f.load(state, LIVE_AT, H.I32), ir.Constant(H.I32, 1)), state, LIVE_AT)
    f.store(f.b.add(f.load(state, STEP_AT, H.I64), ir.Constant(H.I64, 1)), state, STEP_AT)
    f.b.ret(code)
    return {"grads_count": count, "grads_loss": loss_at,
            "workspace": max(gcode.plan.arena_size, acode.plan.arena_size)}


def split_header(name, numbers, labels_type):
    n = name.upper()
    return "\n".join([
        "",
        "/* Data parallel (MPI): each rank runs train_grads on its batch, the ranks average",
        "   `grads` (MPI_Allreduce with MPI_SUM, then divide by the number of ranks), then",
        "   every rank runs train_apply with the same averaged grads. The loss (the mean",
        "   over ranks after averaging) is grads[GRADS_LOSS]. */",
        f"#define {n}_GRADS_COUNT {numbers['grads_count']}  /* floats, 64-byte aligned */",
        f"#define {n}_GRADS_LOSS {numbers['grads_loss']}",
        f"int {name}_train_grads(void *state, const float *input, const {labels_type} *labels,",
        f"{' ' * (len(name) + 16)}void *workspace, float *grads);",
        f"int {name}_train_apply(void *state, const float *grads, float learning_rate, void *workspace);",
        ""])


def add_split_bundle(module, name, halves, train_graph, layout, target):
    """Compile both halves of a trainer's step into `module` and add their entry
    points; halves: (grads graph, apply graph, apply_state, grad_name), optimised,
    as nutshell/training_split.py builds them. Returns the numbers the header needs."""
    from nutshell.compiler.codegen.model import build_model
    from .aot_train import layout_magic, state_layout
    ggraph, agraph, apply_state, grad_name = halves
    codes = []
    for graph, part in ((ggraph, "grads"), (agraph, "apply")):
        codes.append(build_model(graph, target, f"{name}_{part}_impl", module=module))
        module.get_global(codes[-1].entry).linkage = "internal"
    offsets, copy_size = state_layout(train_graph, layout["state"])
    geometry = (offsets, copy_size, layout_magic(name, train_graph, offsets, copy_size),
                64 + 2 * copy_size)
    return add_split_api(module, name, (ggraph, codes[0]), (agraph, codes[1]), layout, apply_state,
                         geometry, target.threads, grad_name)


def with_split_header(text, name, numbers, class_labels):
    """The training header with the split's declarations before its closing lines."""
    cut = text.rindex("\n#ifdef __cplusplus")
    return text[:cut] + split_header(name, numbers, "int64_t" if class_labels else "float") + text[cut:]
