"""What a lowering rule sees: the node, its types, buffers and the target."""
from ..ir.types import DType
from .loop_ir import Buffer, Kernel, NestBuilder


class LowerContext:
    """Gives a lowering rule flat Buffers for the node's inputs and outputs, a
    NestBuilder to emit loops into, scratch and stack buffers, and the target's
    vector width. `algorithm()` packages the result: the kernel before the schedule
    step (schedule/kernels.py) has chosen its parallel loops."""

    def __init__(self, node, in_types, out_types, consts, target, name, variant=None):
        self.node, self.attrs = node, node.attrs
        self.variant = variant    # the variant step's decision (schedule/variants.py), None for most ops
        self.in_types, self.out_types, self.consts = in_types, out_types, consts
        self.target, self.name = target, name
        self.inputs = [Buffer(f"in{i}", t.dtype, t.size) if t is not None else None
                       for i, t in enumerate(in_types)]
        self.outputs = [Buffer(f"out{i}", t.dtype, t.size) for i, t in enumerate(out_types)]
        self.scratch_buffers, self.local_buffers, self.tables = [], [], []
        self.status_buffer = None
        self.nb = NestBuilder()

    def lanes(self, dtype=DType.float32):
        return self.target.lanes(dtype)

    @property
    def threads(self):
        return self.target.threads

    def scratch(self, size, dtype=DType.float32):
        """A temporary buffer in the arena, live only while this kernel runs."""
        buf = Buffer(f"scratch{len(self.scratch_buffers)}", dtype, int(size))
        self.scratch_buffers.append(buf)
        return buf

    def local(self, size, dtype=DType.float32):
        """A small stack buffer (accumulators); LLVM keeps it in registers."""
        buf = Buffer(f"acc{len(self.local_buffers)}", dtype, int(size), local=True)
        self.local_buffers.append(buf)
        return buf

    def status(self):
        """The run's status word (int32): a kernel that finds bad data at run time
        (an index out of range) stores a nonzero code; the entry point returns it."""
        if self.status_buffer is None:
            self.status_buffer = Buffer("status", DType.int32, 1)
        return self.status_buffer

    def table(self, array):
        """A constant lookup table computed at compile time (index maps)."""
        from ..ir.types import DType as _D
        buf = Buffer(f"table{len(self.tables)}", _D.from_numpy(array.dtype), int(array.size))
        self.tables.append((buf, array))
        return buf

    def algorithm(self):
        """The lowered kernel: its loops serial, those that may run in parallel marked
        (schedule_kernel(kernel, target) chooses which do)."""
        params = [b for b in self.inputs if b is not None] + self.outputs + self.scratch_buffers
        params += [b for b, _ in self.tables]
        params += [self.status_buffer] if self.status_buffer is not None else []
        return Kernel(self.name, params, self.nb.body(), self.local_buffers)
