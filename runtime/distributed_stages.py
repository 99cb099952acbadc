"""The `grads` half of a distributed step run stage by stage (nutshell/training_stages.py).

After each stage: the AllReduceSum sums it made (SyncBatchNorm's statistics) are
summed across ranks, blocking, in one call; then each gradient bucket completed
by it starts its all-reduce, in place in the flat buffer, without blocking (the
last bucket blocks: nothing is left to overlap). Between stages MPI is polled
(Testall), since MPICH moves a non-blocking collective only inside MPI calls
unless its progress thread is on (MPIR_CVAR_ASYNC_PROGRESS=1)."""
import ctypes

import numpy as np

import nutshell.distributed as dist
from nutshell.compiler.errors import CompileError

OVERLAP = {"nonblocking": True}      # False: each bucket all-reduced blocking when complete


class _Stage:
    def __init__(self, model, syncs):
        self.model, self.syncs = model, syncs
        self.ptrs = []            # per parity: (input pointers, {data name: slot}, output pointers)
        self.send = self.recv = None
        self.buckets = []         # bucket indices whose all-reduce starts after this stage


class StagedGrads:
    """Runs the stages of `plan` with the given arrays: `outputs[parity]` lists one
    array per graph output; `inputs[parity]` maps graph input name -> array (data
    inputs and frozen parameters are set per step). `buckets` are (flat view,
    output indices) in flat-buffer order."""

    def __init__(self, plan, models, inputs, outputs, buckets, per_step):
        self.graph, self.per_step = plan.graph, per_step
        self.stages = [_Stage(m, s) for m, s in zip(models, plan.syncs)]
        self.buckets = [view for view, _ in buckets]
        for b, (_, members) in enumerate(buckets):
            after = max(plan.ready[plan.graph.outputs[i].name] for i in members)
            self.stages[max(after, 0)].buckets.append(b)
        self.last_bucket = max(range(len(buckets)), key=lambda b: (self._starts_after(b), b))
        self.direct = [i for i, v in enumerate(plan.graph.outputs) if plan.ready[v.name] < 0]
        self._arrays = self._intermediates(plan)      # kept: the stages hold pointers into them
        self._wire(plan, inputs, outputs, self._arrays)

    def _starts_after(self, b):
        return next(s for s, st in enumerate(self.stages) if b in st.buckets)

    def _intermediates(self, plan):
        """Arrays for values handed between stages; SyncBatchNorm sums packed per stage."""
        arrays = {}
        for stage in self.stages:
            if not stage.syncs:
                continue
            types = [plan.graph.types[src] for src, _ in stage.syncs]
            dtype = types[0].dtype.numpy
            if any(t.dtype.numpy != dtype for t in types) or dtype.kind != "f":
                raise CompileError(f"the sums all-reduced together must share one float type, got "
                                   f"{sorted({t.dtype.value for t in types})}")
            stage.send, stage.recv = (np.empty(sum(t.size for t in types), dtype) for _ in range(2))
            at = 0
            for (src, dst), t in zip(stage.syncs, types):
                arrays[src] = stage.send[at:at + t.size].reshape(t.shape)
                arrays[dst] = stage.recv[at:at + t.size].reshape(t.shape)
                at += t.size
        given = set(plan.graph.input_names()) | set(plan.graph.output_names())
        for stage in self.stages:
            if stage.model is not None:
                for v in stage.model.graph.inputs + stage.model.graph.outputs:
                    if v.name not in arrays and v.name not in given:
                        arrays[v.name] = np.empty(v.type.shape, v.type.dtype.numpy)
        return arrays

    def _wire(self, plan, inputs, outputs, arrays):
        graph_inputs = set(plan.graph.input_names())
        made = {o for st in self.stages if st.model is not None for o in st.model.graph.output_names()}
        for _, dst in (p for st in self.stages for p in st.syncs):
            made.add(dst)
        for st in self.stages:
            for src, _ in st.syncs:
                if src not in made:
                    raise CompileError(f"all-reduced value {src} is not computed by the step")
        self.outputs = outputs
        for parity in range(2):
            bound = dict(arrays)
            bound.update({v.name: outputs[parity][i] for i, v in enumerate(plan.graph.outputs)})
            bound.update({n: a for n, a in inputs[parity].items() if n in graph_inputs})
            for st in self.stages:
                if st.model is None:
                    st.ptrs.append(None)
                    continue
                names = st.model.graph.input_names()
                unbound = [n for n in names if n not in bound and n not in self.per_step]
                if unbound:
                    raise CompileError(f"stage inputs {unbound} have no array")
                ins = (ctypes.c_void_p * len(names))(*[bound[n].ctypes.data if n in bound else None
                                                        for n in names])
                slot = {n: i for i, n in enumerate(names) if n in self.per_step}
                outs = [bound[n] for n in st.model.graph.output_names()]
                st.ptrs.append((ins, slot, (ctypes.c_void_p * len(outs))(*[a.ctypes.data for a in outs])))

    def run(self, parity, per_step):
        """One `grads` half: per_step maps data-input and frozen names -> arrays.
        Leaves the gradients summed (not yet averaged) over the ranks."""
        MPI, comm = dist.mpi(), dist.comm()
        for i in self.direct:             # outputs known before any stage (constants)
            self.outputs[parity][i][...] = self.graph.constants.get(self.graph.outputs[i].name, 0)
        pending = []
        for st in self.stages:
            if st.ptrs[parity] is not None:
                ins, slot, outs = st.ptrs[parity]
                for name, i in slot.items():
                    ins[i] = per_step[name].ctypes.data
                st.model.call(ins, outs)
            if st.send is not None:
                with dist.watched("the SyncBatchNorm statistics all-reduce"):
                    comm.Allreduce(st.send, st.recv, op=MPI.SUM)
            for b in st.buckets:
                if b == self.last_bucket or not OVERLAP["nonblocking"]:
                    with dist.watched("the gradient all-reduce"):
                        comm.Allreduce(MPI.IN_PLACE, self.buckets[b], op=MPI.SUM)
                else:
                    pending.append(comm.Iallreduce(MPI.IN_PLACE, self.buckets[b], op=MPI.SUM))
            if pending:
                MPI.Request.Testall(pending)
        if pending:
            with dist.watched("the gradient all-reduce"):
                MPI.Request.Waitall(pending)
