"""Run PTX kernels on a GPU through the CUDA driver API (`cuda-bindings`, the
optional extra `pip install nutshell[cuda]`). Weights are uploaded once; the
arena, inputs and outputs live in device memory; each call copies the inputs in,
launches every step in order on the default stream and copies the outputs and the
status back. run(), model(x) and a trainer's step work as on the CPU."""
import ctypes

import numpy as np

from nutshell.compiler.codegen.c_header import c_identifier
from nutshell.compiler.errors import CompileError, InputError

from .model import CompiledModel


def _driver():
    try:
        from cuda.bindings import driver
    except ImportError:
        raise CompileError("target='cuda' needs the CUDA driver bindings: pip install 'nutshell[cuda]' "
                           "(cuda-bindings); target='cuda-emulated' runs the same kernels on the CPU") from None
    return driver


def _check(result, what):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise CompileError(f"CUDA driver: {what} failed ({err}); is an NVIDIA GPU and driver present?")
    return rest[0] if len(rest) == 1 else rest


def open_device(index=0):
    """(driver module, primary context, 'sm_XY' of the GPU) of GPU `index`, current on this thread."""
    d = _driver()
    try:
        _check(d.cuInit(0), "cuInit")
    except CompileError:
        raise
    except Exception as exc:       # cuda-bindings raises when libcuda itself is missing
        raise CompileError(f"target='cuda': no NVIDIA driver here ({type(exc).__name__}: {exc}); "
                           "target='cuda-emulated' runs the same kernels on the CPU") from None
    if _check(d.cuDeviceGetCount(), "cuDeviceGetCount") <= index:
        raise CompileError("target='cuda': no CUDA GPU found; use target='cuda-emulated'")
    dev = _check(d.cuDeviceGet(index), "cuDeviceGet")
    attr = d.CUdevice_attribute
    major = _check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev), "capability")
    minor = _check(d.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev), "capability")
    context = _check(d.cuDevicePrimaryCtxRetain(dev), "cuDevicePrimaryCtxRetain")
    _check(d.cuCtxSetCurrent(context), "cuCtxSetCurrent")
    return d, context, f"sm_{major}{minor}"


def ptx_arch_for(device_arch, known):
    """The newest of `known` (sm_80, sm_90, ...) the device runs: PTX is JIT-compiled
    forward, so sm_90 PTX serves an sm_100 GPU."""
    number = lambda a: int(a[3:])
    fitting = [a for a in known if number(a) <= number(device_arch)]
    if not fitting:
        raise CompileError(f"the GPU is {device_arch}; nutshell's PTX needs {min(known, key=number)} or newer")
    return max(fitting, key=number)


class CudaModel(CompiledModel):
    def __init__(self, graph, code, ptx, target, device):
        d = self.d = device[0]
        self.graph, self.code, self.target, self.ptx = graph, code, target, ptx
        self.inputs, self.outputs = list(graph.inputs), list(graph.outputs)
        self.context = device[1]
        self.module = _check(d.cuModuleLoadData(ptx.encode() + b"\0"), "cuModuleLoadData (PTX JIT)")
        self.functions = {s.function: _check(d.cuModuleGetFunction(self.module, s.function.encode()),
                                             f"cuModuleGetFunction {s.function}") for s in code.steps}
        self.consts, self.arena = [], None
        try:                          # each upload recorded as made: a failure frees the others
            for c in code.constants:
                self.consts.append(self._upload(np.ascontiguousarray(c)))
            self.arena = self._alloc(max(code.plan.arena_size, 64))
        except CompileError:
            self.__del__()
            raise

    def __del__(self):
        d = getattr(self, "d", None)
        if d is None or not hasattr(self, "consts"):
            return
        try:                          # the weights and arena go with the model
            for ptr in self.consts + ([self.arena] if self.arena is not None else []):
                d.cuMemFree(ptr)
            self.consts, self.arena = [], None
            d.cuModuleUnload(self.module)
        except Exception:
            pass

    def _alloc(self, nbytes):
        return int(_check(self.d.cuMemAlloc(max(int(nbytes), 1)), "cuMemAlloc"))

    def _upload(self, array):
        ptr = self._alloc(array.nbytes)
        if array.nbytes:
            _check(self.d.cuMemcpyHtoD(ptr, array.ctypes.data, array.nbytes), "cuMemcpyHtoD")
        return ptr

    def _resolve(self, ref, ins, outs):
        kind, where = ref
        if kind == "arena":
            return self.arena + where
        return {"input": ins, "output": outs, "const": self.consts}[kind][where]

    def call(self, in_ptrs, out_ptrs):
        """CompiledModel's native call (run() and the trainer use it): ctypes arrays of
        host pointers to the inputs and outputs, copied to and from the device."""
        d = self.d
        _check(d.cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
        ins, outs = [], []
        try:                          # each buffer recorded as made: a failed allocation frees the rest
            for values, ptrs in ((self.inputs, ins), (self.outputs, outs)):
                for v in values:
                    ptrs.append(self._alloc(v.type.nbytes))
            for v, host, dev in zip(self.inputs, in_ptrs, ins):
                if v.type.nbytes:
                    _check(d.cuMemcpyHtoD(dev, host, v.type.nbytes), "cuMemcpyHtoD")
            _check(d.cuMemsetD8(self.arena, 0, 64), "cuMemsetD8")
            for step in self.code.steps:
                ptrs = [ctypes.c_void_p(self._resolve(r, ins, outs)) for r in step.args]
                params = (ctypes.c_void_p * max(len(ptrs), 1))(*[ctypes.addressof(p) for p in ptrs])
                _check(d.cuLaunchKernel(self.functions[step.function], *step.grid, *step.block, 0, 0,
                                        ctypes.addressof(params), 0), f"launch {step.function}")
            for dst, src, nbytes in self.code.copies:
                _check(d.cuMemcpyDtoD(self._resolve(dst, ins, outs), self._resolve(src, ins, outs), nbytes),
                       "cuMemcpyDtoD")
            status = np.zeros(1, np.int32)
            _check(d.cuMemcpyDtoH(status.ctypes.data, self.arena, 4), "cuMemcpyDtoH")
            if status[0] != 0:
                from nutshell.compiler.codegen.aot import ERRORS
                raise InputError(f"run-time check failed: {ERRORS.get(int(status[0]), int(status[0]))}")
            for v, host, dev in zip(self.outputs, out_ptrs, outs):
                if v.type.nbytes:
                    _check(d.cuMemcpyDtoH(host, dev, v.type.nbytes), "cuMemcpyDtoH")
        finally:
            for ptr in ins + outs:
                d.cuMemFree(ptr)

    def source(self, kind="ptx"):
        if kind == "ptx":
            return self.ptx
        if kind == "loops":
            from .cuda import loops_source
            return loops_source(self.code)
        if kind == "llvm":
            return self.code.llvm_ir
        return super().source(kind)

    def export(self, out_dir, name=None, **cpu_options):
        from .cuda_aot import export_cuda, refuse_cpu_options
        refuse_cpu_options(cpu_options)
        return export_cuda(self.graph, out_dir, c_identifier(name or self.graph.name), self.target.arch)
