"""How the thread pool (thread_pool.py) sees that others want the cores: signs read
from the x86 time-stamp counter (a worker up late after its futex wake, a gap in a
worker's spinning, a caller kept waiting by a joiner longer than its own share took).
Any of them sets `busy_until`; until then holds keep nobody spinning."""
from llvmlite import ir

from . import llvm_helpers as H

# A gap this long (~0.4 ms) between two spins, or a joiner keeping the caller waiting this
# long: the OS ran something else here. Others' processes take a whole time slice (1.5 ms
# and more, 2^22-2^24 cycles with two spinning); on a quiet machine (SCHED_FIFO, no rival)
# interrupts and the hypervisor leave gaps and waits under 2^19, which at 2^16 marked the
# machine busy before 9 calls in 10 (SqueezeNet p90 6.2 ms in busy mode against 3.7).
PREEMPTED_CYCLES = 1 << 20
LATE_WAKE_CYCLES = 1 << 19   # a worker up this long (~0.2 ms) after its futex wake waited for a core
BUSY_CYCLES = 1 << 30        # after any of these, holds are ignored for ~0.4 s


class BusySigns:
    """Mixed into thread_pool._Pool (needs module, triple, g, load, store)."""

    @property
    def has_clock(self):
        return self.triple.startswith(("x86_64", "i386", "i686"))

    def cycles(self, b):
        """The time-stamp counter where reading it is cheap and safe (x86), else 0."""
        if not self.has_clock:
            return ir.Constant(H.I64, 0)
        return b.call(H.intrinsic(self.module, "llvm.readcyclecounter", H.I64, []), [])

    def mark_busy(self, b, now):
        self.store(b, "busy_until", b.add(now, ir.Constant(H.I64, BUSY_CYCLES)), "monotonic")

    def note_wake(self, b, slept_at):
        """Woken after it slept: if the OS took long to give this worker a core, others want them."""
        now, woken_at = self.cycles(b), self.load(b, "woken_at", "monotonic")
        late = b.and_(b.icmp_unsigned(">", woken_at, slept_at),
                      b.icmp_unsigned(">", b.sub(now, woken_at), ir.Constant(H.I64, LATE_WAKE_CYCLES)))
        with b.if_then(late):
            self.mark_busy(b, now)

    def busy(self, b, now):
        return b.icmp_unsigned("<", now, self.load(b, "busy_until", "monotonic"))

    def held(self, b, last):
        """Does a call hold the team, and has this worker kept its core? A worker that
        finds it was preempted while spinning marks the machine busy: spinning there
        takes the time slices the caller needs (and a preempted joiner holds it up),
        so for a while nobody spins long; the caller runs the short loops alone."""
        now = self.cycles(b)
        preempted = b.icmp_unsigned(">", b.sub(now, b.load(last)), ir.Constant(H.I64, PREEMPTED_CYCLES))
        b.store(now, last)
        with b.if_then(preempted):
            self.mark_busy(b, now)
        holds = b.icmp_signed(">", self.load(b, "holds", "monotonic"), ir.Constant(H.I32, 0))
        if not self.has_clock:          # no way to see preemption: never spin long
            return ir.Constant(H.I1, 0)
        return b.and_(holds, b.not_(self.busy(b, now)))

    def note_stall(self, b, ran, waited):
        """A joiner that kept the caller waiting longer than the caller's own share took
        (a chunk is a quarter of a share) was preempted mid-chunk: the machine is busy."""
        long_ = b.and_(b.icmp_unsigned(">", waited, ran),
                       b.icmp_unsigned(">", waited, ir.Constant(H.I64, PREEMPTED_CYCLES)))
        with b.if_then(long_):
            self.mark_busy(b, self.cycles(b))
