"""Every parallel loop of a model call, timed at 1 and at N threads: where a second
thread pays and where it does not.

    python tools/pool_trace.py MODEL.onnx [--threads 2] [--repeat 40]
    python tools/pool_trace.py --bench tv:squeezenet1_1     # a model of benchmarks/ (tv:... needs torchvision)

The process's thread pool is built with a recorder around `nutshell_parallel` (its
start, its cycles and the loop's outlined function, for each call of it), and one
compiled model is called alternately with 1 and N threads, so both columns run the
same code on the same machine moments apart. Prints each loop in call order (the
kernel's outlined worker, e.g. main_graph_k5_winogradconv.par1), the median of its
time at 1 and at N threads, the speedup and the serial time before it (since the
previous loop ended, at N threads), then the totals: the call, the loops, the serial
time between them, before the first (the call's entry: at N threads the hold's
futex wake of a sleeping worker, ~20 us on a KVM guest) and after the last.

On a machine shared with other work a loop's N-thread time shows whether a worker
joined at all; `chrt -f 40 python tools/pool_trace.py ...` (root) keeps others off
the cores while it runs."""
import argparse
import ctypes
import functools
import os
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
FIELDS = 3               # start cycle, cycles, the loop's function


def _record(pool, inner):
    """`nutshell_parallel`: call the real entry, then store (start, cycles, function)
    in the ring at the next index; `nutshell_pool.trace_now` reads the counter."""
    module = pool.module
    ring = ir.GlobalVariable(module, ir.ArrayType(H.I64, RING * FIELDS), name="nutshell_pool.trace")
    ring.initializer = ir.Constant(ring.value_type, None)
    count = ir.GlobalVariable(module, H.I64, name="nutshell_pool.trace_count")
    count.initializer = ir.Constant(H.I64, 0)
    fn, b = pool.function(thread_pool.ENTRY, inner.ftype, pool.linkage)
    start = pool.cycles(b)
    b.call(inner, list(fn.args))
    took = b.sub(pool.cycles(b), start)
    at = b.and_(b.atomic_rmw("add", count, ir.Constant(H.I64, 1), "monotonic"), ir.Constant(H.I64, RING - 1))
    for k, value in enumerate((start, took, b.ptrtoint(fn.args[0], H.I64))):
        slot = b.add(b.mul(at, ir.Constant(H.I64, FIELDS)), ir.Constant(H.I64, k))
        b.store(value, b.gep(ring, [ir.Constant(H.I64, 0), slot]))
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
        """[(microseconds, microseconds since the previous loop ended, function address)]
        of the loops recorded from `first` on (the first loop's: since cycle `begin`)."""
        rows = [self.ring[(i % RING) * FIELDS: (i % RING) * FIELDS + FIELDS] for i in range(first, self.count.value)]
        ends = [begin] + [start + took for start, took, _ in rows[:-1]] if rows else []
        return [(took * 1e6 / self.hz, (start - end) * 1e6 / self.hz, fn)
                for (start, took, fn), end in zip(rows, ends)]


def load(args):
    if args.bench:
        from under_load import export
        data, shape = export(args.bench)
        return ns.load_onnx(data)
    return ns.load_onnx(args.model)


def run(trace, model, threads, repeat):
    """{threads: [[(loop us, serial us before it), ...] per call]}, {threads: [call
    seconds]}, and the loops' names."""
    feeds = [np.random.default_rng(0).standard_normal(v.type.shape).astype(v.type.dtype.numpy)
             for v in model.inputs]
    outs = [np.empty(v.type.shape, dtype=v.type.dtype.numpy) for v in model.outputs]
    ins, outp = _pointer_array(feeds), _pointer_array(outs)

    def call(n):
        model._fn(ctypes.addressof(ins), ctypes.addressof(outp), model._workspace().ctypes.data,
                  ctypes.addressof(model._const_ptrs), n)
    loops, calls, fns = {1: [], threads: []}, {1: [], threads: []}, None
    for _ in range(3):
        call(1), call(threads)
    for _ in range(repeat):
        for n in (1, threads):
            first, t, begin = trace.count.value, time.perf_counter(), trace.now()
            call(n)
            calls[n].append(time.perf_counter() - t)
            rows = trace.since(first, begin)
            loops[n].append([(us, gap) for us, gap, _ in rows])
            fns = fns or [fn for _, _, fn in rows]
    return loops, calls, _names(model, fns)


def _names(model, fns):
    import re
    names = set(re.findall(r'define internal void @"?([\w.]+\.par\d+)"?', model.source("llvm")))
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
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=40)
    args = p.parse_args(argv)
    if not (args.model or args.bench):
        p.error("give MODEL.onnx or --bench NAME")
    trace = Trace()
    model = ns.compile(load(args), threads=args.threads)
    loops, calls, names = run(trace, model, args.threads, args.repeat)
    n = args.threads
    one, many = (np.median(np.array(loops[k]), axis=0) for k in (1, n))
    print(f"{'loop':<44} {'1 thread':>10} {f'{n} threads':>10} {'speedup':>8} {'serial before':>14}"
          f"   (us, median of {args.repeat}; serial: at {n} threads, since the previous loop)")
    for name, (a, _), (b, gap) in zip(names, one, many):
        print(f"{name:<44} {a:>10.1f} {b:>10.1f} {a / b:>8.2f} {gap:>14.1f}")
    for k, table in ((1, one), (n, many)):
        call_us, loop_us, gap_us = np.median(calls[k]) * 1e6, table[:, 0].sum(), table[1:, 1].sum()
        print(f"{k} thread(s): call {call_us:.0f} us, {len(names)} loops {loop_us:.0f} us, serial: between them "
              f"{gap_us:.0f} us, before the first {table[0, 1]:.0f} us, after the last "
              f"{call_us - loop_us - gap_us - table[0, 1]:.0f} us")
    slower = sum(b > a for (a, _), (b, _) in zip(one, many))
    print(f"{slower} of {len(names)} loops slower at {n} threads than at 1; load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
