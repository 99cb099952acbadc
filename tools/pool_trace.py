"""Every parallel loop of a model call, timed at 1 and at N threads: where a second
thread pays and where it does not.

    python tools/pool_trace.py MODEL.onnx [--threads 2] [--repeat 40]
    python tools/pool_trace.py --bench tv:squeezenet1_1     # a model of benchmarks/ (tv:... needs torchvision)
    python tools/pool_trace.py --training transformer       # a training step of benchmarks/training.py

The process's thread pool is built with a recorder around `nutshell_parallel` (its
start, its cycles and the loop's outlined function, for each call of it), and one
compiled model is called alternately with 1 and N threads, so both columns run the
same code on the same machine moments apart. Prints each loop in call order (the
kernel's outlined worker, e.g. main_graph_k5_winogradconv.par1), the median of its
time at 1 and at N threads, the speedup and the serial time before it (since the
previous loop ended, at N threads), then the totals: the call, the loops, the serial
time between them, before the first (the call's entry: at N threads the hold's
futex wake of a sleeping worker, ~20 us on a KVM guest) and after the last.

At N threads each loop's participants are timed too (the loop's function runs
through a trampoline that reads the clock around it): the caller's time in it, the
first joiner's, when that joiner started (since the loop's entry) and the caller's
wait at the join (its own share done, a joiner's chunk still running). A caller
that works much longer than the joiner in a loop of few iterations (a split into
one iteration per thread) shows iterations of unequal cost; a late joiner a worker
asleep (a futex wake); a long wait a chunk too coarse or a joiner preempted.
Last, the loops summed by op (conv.par1, winogradconv.par1, ...), the op losing
most to an imperfect split first: its loops' time at 1 and N threads, the time
lost (N-thread time less 1-thread time / N), the caller's, the joiner's and the
wait. Balanced caller and joiner with a speedup well under N is per-thread speed
(memory, the other core's load); a long wait or a caller far above the joiner is
the split.
One model called from one thread at a time (the recorder keeps one job's state).

On a machine shared with other work a loop's N-thread time shows whether a worker
joined at all; `chrt -f 40 python tools/pool_trace.py ...` (root) keeps others off
the cores while it runs."""
import argparse
import ctypes
import functools
import os
import re
import sys
import time

import numpy as np
from llvmlite import ir

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "benchmarks"))

import nutshell as ns  # noqa: E402
from nutshell.compiler.codegen import llvm_helpers as H  # noqa: E402
from nutshell.compiler.codegen import thread_pool  # noqa: E402
from nutshell.runtime import jit  # noqa: E402
from nutshell.runtime.model import _pointer_array  # noqa: E402

RING = 1 << 14           # loops remembered (a call of the largest benchmark model has a few hundred)
FIELDS = 7               # start cycle, cycles, the loop's function; caller's and first joiner's (start, end)


def _global(module, name, ty):
    gv = ir.GlobalVariable(module, ty, name=name)
    gv.initializer = ir.Constant(ty, None)
    return gv


def _record(pool, inner):
    """`nutshell_parallel`: call the real entry with the loop's function behind a
    trampoline (which times slots 0 and 1 in it), then store (start, cycles,
    function) in the ring at the next index; `nutshell_pool.trace_now` reads the counter."""
    module = pool.module
    ring = _global(module, "nutshell_pool.trace", ir.ArrayType(H.I64, RING * FIELDS))
    count = _global(module, "nutshell_pool.trace_count", H.I64)
    job, row = _global(module, "nutshell_pool.trace_job", H.PTR), _global(module, "nutshell_pool.trace_row", H.I64)

    def field(b, at, k):
        return b.gep(ring, [ir.Constant(H.I64, 0), b.add(b.mul(at, ir.Constant(H.I64, FIELDS)), k)])

    tramp, tb = pool.function("nutshell_pool.trace_job_fn", thread_pool.JOB_TYPE, "internal")
    data, slot, team = tramp.args
    at, began = tb.load(row, typ=H.I64), pool.cycles(tb)
    tb.call(tb.inttoptr(tb.ptrtoint(tb.load(job, typ=H.PTR), H.I64), ir.PointerType(thread_pool.JOB_TYPE)),
            [data, slot, team])
    ended = pool.cycles(tb)
    with tb.if_then(tb.icmp_signed("<", slot, ir.Constant(H.I64, 2))):
        k = tb.add(ir.Constant(H.I64, 3), tb.mul(slot, ir.Constant(H.I64, 2)))
        tb.store(began, field(tb, at, k))
        tb.store(ended, field(tb, at, tb.add(k, ir.Constant(H.I64, 1))))
    tb.ret_void()

    fn, b = pool.function(thread_pool.ENTRY, inner.ftype, pool.linkage)
    at = b.and_(b.atomic_rmw("add", count, ir.Constant(H.I64, 1), "monotonic"), ir.Constant(H.I64, RING - 1))
    for k in range(3, FIELDS):          # a joiner that never came leaves zeros
        b.store(ir.Constant(H.I64, 0), field(b, at, ir.Constant(H.I64, k)))
    b.store(at, row)
    b.store(fn.args[0], job)
    start = pool.cycles(b)
    b.call(inner, [tramp] + list(fn.args[1:]))
    took = b.sub(pool.cycles(b), start)
    for k, value in enumerate((start, took, b.ptrtoint(fn.args[0], H.I64))):
        b.store(value, field(b, at, ir.Constant(H.I64, k)))
    b.ret_void()
    _, nb = pool.function("nutshell_pool.trace_now", ir.FunctionType(H.I64, []), "external")
    nb.ret(pool.cycles(nb))


class Trace:
    """The recording pool of this process (build it before any model runs)."""

    def __init__(self):
        if jit._POOL:
            raise RuntimeError("the thread pool is already built in this process")
        define = thread_pool.define
        thread_pool.define = functools.partial(define, wrap_entry=_record)
        try:
            jit.ensure_pool()
        finally:
            thread_pool.define = define
        engine = jit._POOL[0][0]
        self.count = ctypes.c_int64.from_address(engine.get_global_value_address("nutshell_pool.trace_count"))
        self.ring = (ctypes.c_int64 * (RING * FIELDS)).from_address(
            engine.get_global_value_address("nutshell_pool.trace"))
        self.now = ctypes.CFUNCTYPE(ctypes.c_int64)(engine.get_function_address("nutshell_pool.trace_now"))
        self.hz = self._clock_rate()

    def _clock_rate(self):
        c0, t0 = self.now(), time.perf_counter()
        time.sleep(0.1)
        return (self.now() - c0) / (time.perf_counter() - t0)

    def since(self, first, begin):
        """[(microseconds, microseconds since the previous loop ended, function address,
        participants)] of the loops recorded from `first` on (the first loop's: since
        cycle `begin`); participants: (caller's us in the loop's function, the first
        joiner's, when it started since the entry (NaN: none joined), the caller's wait
        at the join)."""
        rows = [self.ring[(i % RING) * FIELDS: (i % RING) * FIELDS + FIELDS] for i in range(first, self.count.value)]
        ends = [begin] + [row[0] + row[1] for row in rows[:-1]] if rows else []
        us = 1e6 / self.hz
        return [(took * us, (start - end) * us, fn,
                 ((c1 - c0) * us, (w1 - w0) * us, (w0 - start) * us if w0 else float("nan"),
                  (start + took - c1) * us))
                for (start, took, fn, c0, c1, w0, w1), end in zip(rows, ends)]


def load(args):
    if args.bench:
        from under_load import export
        data, shape = export(args.bench)
        return ns.load_onnx(data)
    return ns.load_onnx(args.model)


def training_step(name, threads):
    """(the step's CompiledModel, its input and output pointer arrays) of a
    benchmarks/training.py case, compiled as that benchmark does, fed its batch and
    state (the step writes the other state set, so every call reads the same values)."""
    from training import CASES
    build, (optimizer, _) = CASES[name]
    module, inputs, targets = build(ns)
    trainer = ns.compile_training(module, example_inputs=inputs if len(inputs) > 1 else inputs[0],
                                  example_targets=targets, optimizer=optimizer(), threads=threads)
    feed = inputs if len(inputs) > 1 else inputs[0]
    trainer.step(feed, targets)
    batch = trainer._arrays(feed, trainer.input_specs, "inputs") + \
        trainer._arrays(targets, trainer.target_specs, "targets")
    live = trainer._live
    ins = trainer._in_ptrs[live]
    for name, array in zip(trainer.layout["inputs"] + trainer.layout["targets"], batch):
        ins[trainer._slot[name]] = array.ctypes.data
    return trainer.model, (ins, trainer._out_ptrs[live], trainer, batch)    # all kept alive


def run(trace, model, threads, repeat, pointers=None):
    """{threads: [[(loop us, serial us before it), ...] per call]}, {threads: [call
    seconds]}, the loops' names, and the participants of each loop at N threads
    (calls x loops x (caller us, joiner us, joiner's start us, caller's wait us))."""
    if pointers is None:
        feeds = [np.random.default_rng(0).standard_normal(v.type.shape).astype(v.type.dtype.numpy)
                 for v in model.inputs]
        outs = [np.empty(v.type.shape, dtype=v.type.dtype.numpy) for v in model.outputs]
        ins, outp = _pointer_array(feeds), _pointer_array(outs)
    else:
        ins, outp = pointers[:2]

    def call(n):
        model._fn(ctypes.addressof(ins), ctypes.addressof(outp), model._workspace().ctypes.data,
                  ctypes.addressof(model._const_ptrs), n)
    loops, calls, fns, parts = {1: [], threads: []}, {1: [], threads: []}, None, []
    for _ in range(3):
        call(1), call(threads)
    for _ in range(repeat):
        for n in (1, threads):
            first, t, begin = trace.count.value, time.perf_counter(), trace.now()
            call(n)
            calls[n].append(time.perf_counter() - t)
            rows = trace.since(first, begin)
            loops[n].append([(us, gap) for us, gap, _, _ in rows])
            if n == threads:
                parts.append([p for _, _, _, p in rows])
            fns = fns or [fn for _, _, fn, _ in rows]
    return loops, calls, _names(model, fns), np.array(parts)


def _names(model, fns):
    names = set(re.findall(r'define (?:internal )?void @"?([\w.]+\.par\d+)"?', model.source("llvm")))
    where = {}
    for name in names:
        try:
            where[model.jit.address(name)] = name
        except Exception:       # an internal function the engine does not name
            pass
    return [where.get(fn, hex(fn)) for fn in fns]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?")
    p.add_argument("--bench", help="a model name of benchmarks/ (resnet18, tv:squeezenet1_1, ...)")
    p.add_argument("--training", help="a training step of benchmarks/training.py (transformer, unet, ...)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=40)
    args = p.parse_args(argv)
    if not (args.model or args.bench or args.training):
        p.error("give MODEL.onnx, --bench NAME or --training NAME")
    trace = Trace()
    if args.training:
        model, pointers = training_step(args.training, args.threads)
    else:
        model, pointers = ns.compile(load(args), threads=args.threads), None
    loops, calls, names, parts = run(trace, model, args.threads, args.repeat, pointers)
    n = args.threads
    one, many = (np.median(np.array(loops[k]), axis=0) for k in (1, n))
    who = np.nanmedian(parts, axis=0) if len(names) else np.zeros((0, 4))
    print(f"{'loop':<44} {'1 thread':>10} {f'{n} threads':>10} {'speedup':>8} {'serial before':>14}"
          f" {'caller':>8} {'joiner':>8} {'joined at':>9} {'wait':>6}"
          f"   (us, median of {args.repeat}; serial: at {n} threads, since the previous loop;"
          f" caller, joiner: in the loop's function at {n} threads, the joiner starting at"
          f" 'joined at' since the entry; wait: the caller's at the join)")
    for name, (a, _), (b, gap), (mine, theirs, late, wait) in zip(names, one, many, who):
        print(f"{name:<44} {a:>10.1f} {b:>10.1f} {a / b:>8.2f} {gap:>14.1f}"
              f" {mine:>8.1f} {theirs:>8.1f} {late:>9.1f} {wait:>6.1f}")
    for k, table in ((1, one), (n, many)):
        call_us, loop_us, gap_us = np.median(calls[k]) * 1e6, table[:, 0].sum(), table[1:, 1].sum()
        print(f"{k} thread(s): call {call_us:.0f} us, {len(names)} loops {loop_us:.0f} us, serial: between them "
              f"{gap_us:.0f} us, before the first {table[0, 1]:.0f} us, after the last "
              f"{call_us - loop_us - gap_us - table[0, 1]:.0f} us")
    if len(names):
        alone = np.isnan(parts[:, :, 2]).mean() * 100
        mine, theirs, wait = (np.median(np.nansum(parts[:, :, k], axis=1)) for k in (0, 1, 3))
        print(f"{n} threads, per call (median): the caller {mine:.0f} us in the loops' functions, the first joiner "
              f"{theirs:.0f} us; the caller's wait at the joins {wait:.0f} us; {alone:.1f}% of loops "
              f"without a joiner; a joiner's start since the entry: median "
              f"{np.nanmedian(parts[:, :, 2]):.1f} us, mean {np.nanmean(parts[:, :, 2]):.1f} us")
    slower = sum(b > a for (a, _), (b, _) in zip(one, many))
    print(f"{slower} of {len(names)} loops slower at {n} threads than at 1; load {os.getloadavg()[0]:.1f}")
    print_by_op(names, one, many, who, n)


def by_op(names, one, many, who, n):
    """The loops summed by their op's function (main_graph_k12_conv.par1 -> conv.par1),
    the largest loss first: [(op, loops, 1-thread us, n-thread us, lost us, caller us,
    joiner us, wait us)], lost = n-thread time - 1-thread time / n (what a perfect
    split would save). Each loop's column is its median, so sums of them are not
    the call's median (a call's rare slow loop lands in none of them)."""
    rows = {}
    for name, (a, _), (b, _), (mine, theirs, _, wait) in zip(names, one, many, who):
        op = re.sub(r"^.*_k\d+_", "", name)
        row = rows.setdefault(op, [op, 0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
        for k, v in enumerate((1, a, b, b - a / n, mine, np.nan_to_num(theirs), wait), 1):
            row[k] += v
    return sorted(rows.values(), key=lambda r: -r[4])


def print_by_op(names, one, many, who, n):
    print(f"\nby op ({n} threads; lost: {n}-thread time less 1-thread time / {n}; us):")
    print(f"{'op':<32} {'loops':>5} {'1 thread':>10} {f'{n} threads':>10} {'speedup':>8} {'lost':>8}"
          f" {'caller':>8} {'joiner':>8} {'wait':>7}")
    for op, count, a, b, lost, mine, theirs, wait in by_op(names, one, many, who, n):
        print(f"{op:<32} {count:>5} {a:>10.0f} {b:>10.0f} {a / max(b, 1e-9):>8.2f} {lost:>8.0f}"
              f" {mine:>8.0f} {theirs:>8.0f} {wait:>7.0f}")


if __name__ == "__main__":
    main()
