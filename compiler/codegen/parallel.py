"""Parallel loops of the kernel emitter: a `parallel` For outlined into a worker that
the thread pool (thread_pool.py) runs on the calling thread and on every worker that
joins in time."""
from llvmlite import ir

from ..lower.loop_ir import THREAD_INDEX
from ..lower.loop_printer import structure_key
from . import llvm_helpers as H
from . import thread_pool

CHUNKS_PER_THREAD = 4   # a parallel loop's chunks per thread: some to rebalance, few atomics


class ParallelLoops:
    """Mixed into KernelEmitter (needs builder, bufs, env, kernel, module, threads,
    nthreads, stmts, _begin, workers)."""

    def parallel_loop(self, s):
        """Outline the loop body into a worker(ptr data, i64 slot, i64 team) run by
        nutshell_parallel on the caller and the workers that join. Each participant owns an equal range of iterations and takes it in chunks from the
        range's counter; when done it takes chunks from the other ranges (work
        stealing): on a shared machine a thread whose core is busy elsewhere does
        less instead of holding the others at the join, and on a quiet one every
        thread works on the same part of the data in consecutive ops (their caches
        hold it: a chain of 512 x 1024 softmaxes took 0.5x the time of one shared
        counter).
        Each iteration runs once whoever runs it, so results never depend on the
        schedule; THREAD_INDEX is the participant's slot (its scratch), unique
        among the job's participants, below the team size. The caller runs every
        range no worker has claimed, so a worker that never wakes costs nothing."""
        b = self.builder
        params = list(self.kernel.params)
        vars_ = sorted(self.env)
        struct_ty = ir.LiteralStructType([H.PTR] * (len(params) + 1) + [H.I64] * len(vars_))
        data = H.alloca(b, struct_ty)
        counters_ty = ir.ArrayType(H.I64, self.threads)     # chunks taken of each thread's range
        counter = H.alloca(b, counters_ty)
        b.store(ir.Constant(counters_ty, None), counter)    # zeroinitializer: IR size independent of threads
        values = [self.bufs[p.name] for p in params] + [counter] + [self.env[v] for v in vars_]
        for k, value in enumerate(values):
            b.store(value, b.gep(data, [ir.Constant(H.I32, 0), ir.Constant(H.I32, k)],
                                 source_etype=struct_ty))
        worker = self._worker(s, params, vars_, struct_ty, counters_ty, len(values))
        team = ir.Constant(H.I32, min(s.extent, self.threads))    # scratch has a slot per compiled thread
        team = b.select(b.icmp_signed("<", self.nthreads, team), self.nthreads, team)
        team = b.select(b.icmp_signed("<", team, ir.Constant(H.I32, 1)), ir.Constant(H.I32, 1), team)
        b.call(thread_pool.declare(self.module), [worker, data, b.sext(team, H.I64)])

    def _worker(self, s, params, vars_, struct_ty, counters_ty, nfields):
        """The worker of `s`: one emitted before for the same loop (its statements,
        buffers, captured variables and thread count alike: a convolution and the
        input gradient that is the same convolution) when the build shares them
        (`self.workers`, model.ModuleParts), else a new one."""
        key = None
        if self.workers is not None:
            key = structure_key(self.threads, params, self.kernel.locals, vars_, s)
            found = self.workers.find_worker(self.module, key)
            if found is not None:
                return found
        self._workers += 1
        worker = ir.Function(self.module, thread_pool.JOB_TYPE,
                             name=f"{self.kernel.name}.par{self._workers}")
        worker.linkage = "internal"
        self._emit_worker(worker, s, params, vars_, struct_ty, counters_ty, nfields)
        if key is not None:
            self.workers.add_worker(key, worker)
        return worker

    def _emit_worker(self, worker, s, params, vars_, struct_ty, counters_ty, nfields):
        saved = (self.builder, self.bufs, dict(self.env))
        self.in_worker = True
        self._begin(worker, {})
        wb = self.builder
        fields = [wb.load(wb.gep(worker.args[0], [ir.Constant(H.I32, 0), ir.Constant(H.I32, k)],
                                 source_etype=struct_ty), typ=H.I64 if k > len(params) else H.PTR)
                  for k in range(nfields)]
        self.bufs.update({p.name: f for p, f in zip(params, fields)})
        self.env.update(dict(zip(vars_, fields[len(params) + 1:])))
        self.env[THREAD_INDEX.name], nth = worker.args[1], worker.args[2]
        extent = ir.Constant(H.I64, s.extent)
        one = ir.Constant(H.I64, 1)
        per = wb.sdiv(wb.add(extent, wb.sub(nth, one)), nth)
        grain = wb.sdiv(per, ir.Constant(H.I64, CHUNKS_PER_THREAD))
        grain = wb.select(wb.icmp_signed("<", grain, one), one, grain)

        def each_range(k, _):         # its own range first, then the others'
            cb = self.builder
            r = cb.srem(cb.add(self.env[THREAD_INDEX.name], k), nth)
            lo, counter_r = cb.mul(r, per), cb.gep(fields[len(params)], [ir.Constant(H.I32, 0), r],
                                                   source_etype=counters_ty)
            hi = cb.select(cb.icmp_signed("<", cb.add(lo, per), extent), cb.add(lo, per), extent)
            grab, work, done = (cb.append_basic_block(n) for n in ("grab", "work", "next"))
            cb.branch(grab)
            cb.position_at_end(grab)
            start = cb.add(lo, cb.atomic_rmw("add", counter_r, grain, "monotonic"))
            cb.cbranch(cb.icmp_signed("<", start, hi), work, done)
            cb.position_at_end(work)
            stop = cb.select(cb.icmp_signed("<", cb.add(start, grain), hi), cb.add(start, grain), hi)

            def body(i, _):
                self.env[s.var.name] = self.builder.add(start, i)
                self.stmts(s.body, None)
            H.counted_loop(cb, cb.sub(stop, start), body, name=s.var.name)
            self.builder.branch(grab)
            self.builder.position_at_end(done)
        H.counted_loop(wb, nth, each_range, name="range")
        self.builder.ret_void()
        self.builder, self.bufs, self.env = saved
        self.in_worker = False
