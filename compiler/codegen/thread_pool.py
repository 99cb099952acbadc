"""The thread pool that runs parallel loops, written in LLVM IR so that JIT code and
AOT libraries need only libc (pthread_create, the futex system call).

    void nutshell_parallel(void (*fn)(void *data, i64 slot, i64 team), void *data, i64 team)

The caller takes part: it opens the job, runs fn(data, 0, team) itself (fn claims
chunks until none is left), then closes the job and waits only for the workers
that joined it, whose chunks are in flight. A worker the OS has not scheduled
yet never holds the caller up (libgomp's join waited for every team thread: on a
busy machine a 2-thread ResNet-18 call took 10x ONNX Runtime's). Each joiner gets
the next slot number (its scratch slot), never beyond the team.

A model call holds the team (`nutshell_pool_hold` at its entry, `nutshell_pool_release`
before it returns): the hold wakes sleeping workers at once, so they are up by the
call's first loop, and while any call holds, workers spin (with pause, bounded by
HOLD_ROUNDS) between the call's loops instead of sleeping: a training step's short
loops follow each other within microseconds, and a futex wake per loop cost more
than the loop (LeNet step at 2 threads 1.40 ms against 0.89 with libgomp). Released,
they spin only SPIN_ROUNDS and sleep, so between calls they leave the cores to
others (spinning longer for everyone slowed PyTorch in the same process).
Holding pays only while the cores are ours: on a busy machine a spinning worker
takes the time slices its caller needs, and a joiner preempted mid-chunk holds the
caller up (measured: p90 up to 2.6x with holding there). So the pool watches for
signs of others wanting the cores (x86 time-stamp counter): a worker up late
after its futex wake, a gap in a worker's spinning, a caller kept waiting by a
joiner longer than its own share took. Any of them sets `busy_until`, and until
then holds keep nobody spinning (they still wake sleepers: the first loop would
wake them anyway, only later). Without a cheap clock (not x86) holds only wake.

One job runs at a time (the `owner` lock); a caller that finds the pool busy (another
thread's model) runs its loop alone, which is correct since fn claims every chunk.
All state is process-wide and only changed atomically: many threads may call at
once. Workers spin briefly after a job (the next loop often follows within microseconds),
then sleep on a futex. After fork() the child has no workers and every caller
simply runs its loops alone.

`tickets` packs the job generation (high 32 bits), a closed flag and the number of
participants (caller included): a worker joins by compare-and-swap, so it can
never join a job that is closed or a later one by mistake."""
from llvmlite import ir

from . import llvm_helpers as H
from .pool_busy import BusySigns

ENTRY = "nutshell_parallel"
STOP = "nutshell_pool_stop"
HOLD, RELEASE = "nutshell_pool_hold", "nutshell_pool_release"
MAX_WORKERS = 1023
SPIN_ROUNDS = 1 << 10     # pauses before a worker sleeps (tens of us): longer spins measured slower on a busy machine
HOLD_ROUNDS = 1 << 15     # ... while a call holds the team (about 1 ms; a pause is ~27 ns on this EPYC)
WAIT_ROUNDS = 1 << 16     # pauses of a caller waiting for its joiners between yields (~2 ms)
CLOSED = 1 << 31
COUNT_MASK = CLOSED - 1
JOB_TYPE = ir.FunctionType(H.VOID, [H.PTR, H.I64, H.I64])
_SYS_FUTEX = {"x86_64": 202, "aarch64": 98}
FUTEX_WAIT_PRIVATE, FUTEX_WAKE_PRIVATE = 128, 129
AWAKE, ASLEEP, SIGNALLED = 0, 1, 2     # a worker's sleep state: only an ASLEEP one needs a futex wake
_NAMES = ("tickets", "owner", "fn", "data", "team", "finished", "wake", "sleepers", "started",
          "running", "stop", "holds", "busy_until", "woken_at")


def declare(module):
    """The entry point as the kernels call it (defined by `define`, or by the runtime)."""
    return H.intrinsic(module, ENTRY, H.VOID, [H.PTR, H.PTR, H.I64])


def hold_team(module, b, threads):
    """Emit the hold at a model call's entry (when its kernels use the pool); returns
    a function that emits the release (call it before every return)."""
    if module.globals.get(ENTRY) is None:
        return lambda: None
    team = b.sext(threads, H.I64)
    b.call(H.intrinsic(module, HOLD, H.VOID, [H.I64]), [team])
    return lambda: b.call(H.intrinsic(module, RELEASE, H.VOID, [H.I64]), [team])


class _Pool(BusySigns):
    def __init__(self, module, triple, linkage):
        self.module, self.triple = module, triple
        types = {"fn": H.PTR, "data": H.PTR, "tickets": H.I64, "team": H.I64, "busy_until": H.I64,
                 "woken_at": H.I64}
        self.g = {}
        for name in _NAMES:
            ty = types.get(name, H.I32)
            gv = ir.GlobalVariable(module, ty, name=f"nutshell_pool.{name}")
            gv.linkage = "internal"
            gv.initializer = ir.Constant(ty, CLOSED if name == "tickets" else None)
            gv.align = 64 if name in ("tickets", "finished", "wake") else 8   # own cache lines
            self.g[name] = gv
        states = ir.ArrayType(H.I32, MAX_WORKERS)      # each worker's AWAKE / ASLEEP / SIGNALLED
        self.g["state"] = gv = ir.GlobalVariable(module, states, name="nutshell_pool.state")
        gv.linkage, gv.initializer, gv.align = "internal", ir.Constant(states, None), 64
        arch = triple.split("-")[0]
        self.futex_no = _SYS_FUTEX.get(arch, 202)
        self.syscall = module.globals.get("syscall") or \
            ir.Function(module, ir.FunctionType(H.I64, [H.I64], var_arg=True), name="syscall")
        self.linkage = linkage

    # ---- small pieces ------------------------------------------------------------
    def load(self, b, name, order="acquire"):
        gv = self.g[name]
        return b.load_atomic(gv, order, 8 if gv.value_type in (H.I64, H.PTR) else 4)

    def store(self, b, name, value, order="release"):
        gv = self.g[name]
        b.store_atomic(value, gv, order, 8 if gv.value_type in (H.I64, H.PTR) else 4)

    def pause(self, b):
        if self.triple.startswith(("x86_64", "i386", "i686")):
            b.call(H.intrinsic(self.module, "llvm.x86.sse2.pause", H.VOID, []), [])
        elif self.triple.startswith("aarch64"):
            b.call(H.intrinsic(self.module, "llvm.aarch64.hint", H.VOID, [H.I32]), [ir.Constant(H.I32, 1)])

    def futex(self, b, op, value):
        null = ir.Constant(H.PTR, None)
        b.call(self.syscall, [ir.Constant(H.I64, self.futex_no), self.g["wake"], ir.Constant(H.I64, op),
                              value, null, null, ir.Constant(H.I64, 0)])

    def wake(self, b):
        """Bump the futex word, and wake every sleeper if any sleeps that no earlier
        wake signalled: a woken worker the OS has not run yet still counts as a
        sleeper, and under load every loop's entry paid a futex system call for it
        (SqueezeNet with 2 busy processes: 57 wakes a call for 12 sleeps). All of
        them, not the team's count: the futex picks which waiters wake, so a worker
        marked SIGNALLED but left waiting would be skipped by every later wake (a
        2-thread loop's wake left 2 of 3 workers out of the next 4-thread loops)."""
        b.atomic_rmw("add", self.g["wake"], ir.Constant(H.I32, 1), "seq_cst")
        sleeping = b.icmp_signed(">", self.load(b, "sleepers", "seq_cst"), ir.Constant(H.I32, 0))
        with b.if_then(sleeping):
            signalled = self.signal_sleepers(b)
            with b.if_then(b.icmp_signed(">", signalled, ir.Constant(H.I32, 0))):
                self.store(b, "woken_at", self.cycles(b), "monotonic")
                self.futex(b, FUTEX_WAKE_PRIVATE, ir.Constant(H.I64, MAX_WORKERS))

    def signal_sleepers(self, b):
        """Mark every ASLEEP worker SIGNALLED; returns how many were. A worker that
        announces its sleep after this scan reads the bumped futex word, so it never
        sleeps through the wake; one already SIGNALLED had a futex wake after its
        announcement."""
        found = H.alloca(b, H.I32)
        b.store(ir.Constant(H.I32, 0), found)
        started = b.sext(self.load(b, "started", "acquire"), H.I64)

        def each(i, _):
            slot = b.gep(self.g["state"], [ir.Constant(H.I64, 0), i])
            pair = b.cmpxchg(slot, ir.Constant(H.I32, ASLEEP), ir.Constant(H.I32, SIGNALLED), "seq_cst", "seq_cst")
            b.store(b.add(b.load(found), b.zext(b.extract_value(pair, 1), H.I32)), found)
        H.counted_loop(b, started, each, name="signal")
        return b.load(found)

    def call_job(self, b, slot, team):
        fn = b.load(self.g["fn"], typ=ir.PointerType(JOB_TYPE))
        b.call(fn, [b.load(self.g["data"], typ=H.PTR), slot, team])

    def function(self, name, fnty, linkage):
        fn = self.module.globals.get(name)
        if fn is None:
            fn = ir.Function(self.module, fnty, name=name)
        fn.linkage = linkage
        fn.attributes.add("nounwind")
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    # ---- the worker thread ----------------------------------------------------------
    def worker(self):
        fn, b = self.function("nutshell_pool.worker", ir.FunctionType(H.PTR, [H.PTR]), "internal")
        state = b.gep(self.g["state"], [ir.Constant(H.I64, 0), b.ptrtoint(fn.args[0], H.I64)])
        seen = b.alloca(H.I64)                      # the last generation this worker saw
        spins = b.alloca(H.I32)
        last = b.alloca(H.I64)                      # the cycle count at its last spin
        b.store(ir.Constant(H.I64, -1), seen)
        b.store(self.cycles(b), last)
        blocks = {n: fn.append_basic_block(n) for n in
                  ("top", "spin", "new", "join", "ran", "idle", "sleep", "exit")}
        b.branch(blocks["top"])
        b.position_at_end(blocks["top"])
        b.store(ir.Constant(H.I32, 0), spins)
        stop = b.icmp_signed("!=", self.load(b, "stop"), ir.Constant(H.I32, 0))
        b.cbranch(stop, blocks["exit"], blocks["spin"])

        b.position_at_end(blocks["spin"])
        w = self.load(b, "tickets")
        gen = b.lshr(w, ir.Constant(H.I64, 32))
        b.cbranch(b.icmp_unsigned("!=", gen, b.load(seen)), blocks["new"], blocks["idle"])

        b.position_at_end(blocks["new"])               # a job this worker has not seen
        closed = b.icmp_unsigned("!=", b.and_(w, ir.Constant(H.I64, CLOSED)), ir.Constant(H.I64, 0))
        with b.if_then(closed):
            b.store(gen, seen)
        b.cbranch(closed, blocks["idle"], blocks["join"])

        b.position_at_end(blocks["join"])
        pair = b.cmpxchg(self.g["tickets"], w, b.add(w, ir.Constant(H.I64, 1)), "acq_rel", "acquire")
        b.cbranch(b.extract_value(pair, 1), blocks["ran"], blocks["spin"])

        b.position_at_end(blocks["ran"])
        b.store(gen, seen)
        slot = b.and_(w, ir.Constant(H.I64, COUNT_MASK))
        team = b.load(self.g["team"], typ=H.I64)
        with b.if_then(b.icmp_signed("<", slot, team)):
            self.call_job(b, slot, team)
        b.atomic_rmw("add", self.g["finished"], ir.Constant(H.I32, 1), "release")
        b.store(ir.Constant(H.I32, 0), spins)
        b.store(self.cycles(b), last)
        b.branch(blocks["spin"])

        b.position_at_end(blocks["idle"])
        count = b.add(b.load(spins), ir.Constant(H.I32, 1))
        b.store(count, spins)
        held = self.held(b, last)
        rounds = b.select(held, ir.Constant(H.I32, HOLD_ROUNDS), ir.Constant(H.I32, SPIN_ROUNDS))
        keep_spinning = b.icmp_signed("<", count, rounds)
        with b.if_then(keep_spinning):
            self.pause(b)
        b.cbranch(keep_spinning, blocks["spin"], blocks["sleep"])

        b.position_at_end(blocks["sleep"])     # announce, re-check, then wait on the futex word
        b.store_atomic(ir.Constant(H.I32, ASLEEP), state, "seq_cst", 4)
        b.atomic_rmw("add", self.g["sleepers"], ir.Constant(H.I32, 1), "seq_cst")
        expected = self.load(b, "wake", "seq_cst")
        w = self.load(b, "tickets", "seq_cst")
        quiet = b.and_(b.icmp_unsigned("==", b.lshr(w, ir.Constant(H.I64, 32)), b.load(seen)),
                       b.icmp_signed("==", self.load(b, "stop", "seq_cst"), ir.Constant(H.I32, 0)))
        with b.if_then(quiet):
            slept_at = self.cycles(b)
            self.futex(b, FUTEX_WAIT_PRIVATE, b.zext(expected, H.I64))
            self.note_wake(b, slept_at)
        b.atomic_rmw("sub", self.g["sleepers"], ir.Constant(H.I32, 1), "seq_cst")
        b.store_atomic(ir.Constant(H.I32, AWAKE), state, "seq_cst", 4)
        b.store(self.cycles(b), last)
        b.branch(blocks["top"])

        b.position_at_end(blocks["exit"])
        b.atomic_rmw("sub", self.g["running"], ir.Constant(H.I32, 1), "release")
        b.ret(ir.Constant(H.PTR, None))
        return fn

    def start_workers(self, b, want, worker):
        """Create workers until `want` exist (under the owner lock); a failure just means fewer."""
        create = H.intrinsic(self.module, "pthread_create", H.I32, [H.PTR, H.PTR, H.PTR, H.PTR])
        detach = H.intrinsic(self.module, "pthread_detach", H.I32, [H.I64])
        tid = H.alloca(b, H.I64)
        fn = b.function
        check, make, done = (fn.append_basic_block(n) for n in ("grow", "create", "grown"))
        b.branch(check)
        b.position_at_end(check)
        started = b.load(self.g["started"], typ=H.I32)
        b.cbranch(b.icmp_signed("<", started, want), make, done)
        b.position_at_end(make)
        b.atomic_rmw("add", self.g["running"], ir.Constant(H.I32, 1), "seq_cst")
        null = ir.Constant(H.PTR, None)
        index = b.inttoptr(b.zext(started, H.I64), H.PTR)      # the worker's own sleep state
        rc = b.call(create, [tid, null, worker, index])
        ok = b.icmp_signed("==", rc, ir.Constant(H.I32, 0))
        with b.if_else(ok) as (then, otherwise):
            with then:
                b.call(detach, [b.load(tid, typ=H.I64)])
                b.store(b.add(started, ir.Constant(H.I32, 1)), self.g["started"])
            with otherwise:
                b.atomic_rmw("sub", self.g["running"], ir.Constant(H.I32, 1), "seq_cst")
        b.cbranch(ok, check, done)
        b.position_at_end(done)
        return b.load(self.g["started"], typ=H.I32)

    # ---- the caller's side ------------------------------------------------------------
    def entry(self, worker, name=ENTRY, linkage=None):
        fnty = ir.FunctionType(H.VOID, [H.PTR, H.PTR, H.I64])
        fn, b = self.function(name, fnty, linkage or self.linkage)
        job, data, team = fn.args
        alone, pooled = fn.append_basic_block("alone"), fn.append_basic_block("pooled")
        single = b.icmp_signed("<=", team, ir.Constant(H.I64, 1))
        got = b.cmpxchg(self.g["owner"], ir.Constant(H.I32, 0), ir.Constant(H.I32, 1), "acquire", "monotonic")
        stopped = b.icmp_signed("!=", self.load(b, "stop"), ir.Constant(H.I32, 0))
        b.cbranch(b.or_(single, b.or_(stopped, b.not_(b.extract_value(got, 1)))), alone, pooled)

        b.position_at_end(alone)        # one thread, or the pool is busy with another caller's job
        with b.if_then(b.extract_value(got, 1)):
            self.store(b, "owner", ir.Constant(H.I32, 0))
        b.call(_callable(b, job), [data, ir.Constant(H.I64, 0), team])
        b.ret_void()

        b.position_at_end(pooled)
        want = b.trunc(team, H.I32)
        want = b.sub(b.select(b.icmp_signed(">", want, ir.Constant(H.I32, MAX_WORKERS + 1)),
                              ir.Constant(H.I32, MAX_WORKERS + 1), want), ir.Constant(H.I32, 1))
        self.start_workers(b, want, worker)
        b.store(job, self.g["fn"])
        b.store(data, self.g["data"])
        b.store(team, self.g["team"])
        self.store(b, "finished", ir.Constant(H.I32, 0), "monotonic")
        gen = b.add(b.lshr(self.load(b, "tickets", "monotonic"), ir.Constant(H.I64, 32)), ir.Constant(H.I64, 1))
        self.store(b, "tickets", b.or_(b.shl(gen, ir.Constant(H.I64, 32)), ir.Constant(H.I64, 1)), "seq_cst")
        self.wake(b)
        began = self.cycles(b)
        b.call(_callable(b, job), [data, ir.Constant(H.I64, 0), team])
        old = b.atomic_rmw("or", self.g["tickets"], ir.Constant(H.I64, CLOSED), "acq_rel")
        joined = b.trunc(b.sub(b.and_(old, ir.Constant(H.I64, COUNT_MASK)), ir.Constant(H.I64, 1)), H.I32)
        ran = self.cycles(b)
        self.wait_until(b, "finished", joined)
        self.note_stall(b, b.sub(ran, began), b.sub(self.cycles(b), ran))
        self.store(b, "owner", ir.Constant(H.I32, 0))
        b.ret_void()
        return fn

    def hold(self):
        """A call takes the team: workers spin between its loops; sleepers wake now, busy
        machine or not (else the first loop's own wake came too late: a worker up mid-loop
        took a chunk the caller then waited for; SqueezeNet's first loop 53 us against 29)."""
        fn, b = self.function(HOLD, ir.FunctionType(H.VOID, [H.I64]), self.linkage)
        with b.if_then(b.icmp_signed(">", fn.args[0], ir.Constant(H.I64, 1))):
            b.atomic_rmw("add", self.g["holds"], ir.Constant(H.I32, 1), "seq_cst")
            self.wake(b)
        b.ret_void()

    def release(self):
        fn, b = self.function(RELEASE, ir.FunctionType(H.VOID, [H.I64]), self.linkage)
        with b.if_then(b.icmp_signed(">", fn.args[0], ir.Constant(H.I64, 1))):
            b.atomic_rmw("sub", self.g["holds"], ir.Constant(H.I32, 1), "release")
        b.ret_void()

    def wait_until(self, b, name, value):
        """Spin (pausing; every WAIT_ROUNDS pauses yielding the core once) until the
        counter reaches `value`: only workers already running a chunk are waited for.
        Yielding is rare because on a busy machine it hands the core to another
        process for its whole time slice (a 4 ms tick here), after which the caller
        waits again for its turn. Yielding after 256 pauses, SqueezeNet at 2 threads
        with two processes spinning read p90 18.3 ms (1.11x ONNX Runtime's) against
        12.5 (0.78x) this way (benchmarks/under_load.py), and its caller spent 2.5 s
        of 4.5 waiting for a core."""
        yield_ = H.intrinsic(self.module, "sched_yield", H.I32, [])
        fn = b.function
        spins = H.alloca(b, H.I32)
        b.store(ir.Constant(H.I32, 0), spins)
        loop, wait, done = (fn.append_basic_block(n) for n in ("wait", "waiting", "waited"))
        b.branch(loop)
        b.position_at_end(loop)
        b.cbranch(b.icmp_signed("==", self.load(b, name), value), done, wait)
        b.position_at_end(wait)
        count = b.add(b.load(spins), ir.Constant(H.I32, 1))
        b.store(count, spins)
        with b.if_else(b.icmp_signed("<", count, ir.Constant(H.I32, WAIT_ROUNDS))) as (then, otherwise):
            with then:
                self.pause(b)
            with otherwise:        # a joiner preempted onto this core gets to run
                b.call(yield_, [])
                b.store(ir.Constant(H.I32, 0), spins)
        b.branch(loop)
        b.position_at_end(done)

    def stop(self):
        """Ask the workers to exit and wait until they have (before their code is unmapped)."""
        fn, b = self.function(STOP, ir.FunctionType(H.VOID, []), self.linkage)
        self.store(b, "stop", ir.Constant(H.I32, 1), "seq_cst")
        b.atomic_rmw("add", self.g["wake"], ir.Constant(H.I32, 1), "seq_cst")
        self.futex(b, FUTEX_WAKE_PRIVATE, ir.Constant(H.I64, 1 << 30))
        self.wait_until(b, "running", ir.Constant(H.I32, 0))
        b.ret_void()
        return fn


def _callable(b, ptr):
    """`ptr` typed as a job function, so llvmlite lets us call it."""
    return b.inttoptr(b.ptrtoint(ptr, H.I64), ir.PointerType(JOB_TYPE))


def define(module, triple, linkage="internal", destructor=True, wrap_entry=None):
    """Add the pool to `module` (defining `nutshell_parallel` if the kernels declared it).
    With `destructor`, the module's unloading (exit, dlclose) stops the workers first.
    `wrap_entry(pool, inner)` defines `nutshell_parallel` around the real entry, renamed
    (tools/pool_trace.py times every parallel loop that way)."""
    pool = _Pool(module, triple, linkage)
    if wrap_entry is None:
        pool.entry(pool.worker())
    else:
        wrap_entry(pool, pool.entry(pool.worker(), ENTRY + ".inner", "internal"))
    pool.hold()
    pool.release()
    stop = pool.stop()
    if destructor:
        entry_ty = ir.LiteralStructType([H.I32, H.PTR, H.PTR])
        dtors = ir.GlobalVariable(module, ir.ArrayType(entry_ty, 1), name="llvm.global_dtors")
        dtors.linkage = "appending"
        dtors.initializer = ir.Constant(ir.ArrayType(entry_ty, 1), [
            ir.Constant(entry_ty, [ir.Constant(H.I32, 65535), stop, ir.Constant(H.PTR, None)])])
    return module
