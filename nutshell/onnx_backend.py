"""nutshell as an ONNX backend (onnx.backend.base.Backend), so onnx's conformance
runner drives it as it drives ONNX Runtime:

    rep = nutshell.onnx_backend.prepare(model)
    outputs = rep.run([x, ...])

nutshell compiles for static shapes: a representation compiles on its first run
for the shapes it is given (and again for new ones). Integer inputs that decide a
shape (Reshape's target, Slice's bounds, ...) are baked in as constants when the
model cannot compile without them, as ONNX Runtime's shape inference would."""
import numpy as np
import onnx
from onnx.backend.base import Backend, BackendRep

import nutshell as ns
from nutshell.compiler.errors import ShapeError


class NutshellRep(BackendRep):
    def __init__(self, model, threads=1):
        self.model = model
        self.bytes = model.SerializeToString()
        init = {t.name for t in model.graph.initializer}
        self.input_names = [v.name for v in model.graph.input if v.name not in init]
        self.output_names = [v.name for v in model.graph.output]
        self.threads = threads
        self._compiled = {}

    def _compile(self, feeds):
        shapes = {k: v.shape for k, v in feeds.items()}
        try:
            return ns.compile(ns.load_onnx(self.bytes, input_shapes=shapes), threads=self.threads), ()
        except ShapeError as exc:
            if "constant" not in str(exc):
                raise
        baked = tuple(k for k, v in feeds.items() if v.dtype.kind in "iub" or v.size <= 16)
        graph = ns.load_onnx(self.bytes, input_shapes=shapes,
                             constant_inputs={k: feeds[k] for k in baked})
        return ns.compile(graph, threads=self.threads), baked

    def run(self, inputs, **kwargs):
        if isinstance(inputs, dict):
            feeds = {k: np.asarray(v) for k, v in inputs.items()}
        else:
            feeds = {k: np.asarray(v) for k, v in zip(self.input_names, inputs)}
        key = tuple((k, v.shape, v.dtype.str) for k, v in sorted(feeds.items()))
        entry = self._compiled.get(key)
        if entry is not None and entry[1]:          # baked values must match too
            vkey = tuple(feeds[k].tobytes() for k in entry[1])
            entry = self._compiled.get(key + (vkey,))
        if entry is None:
            entry = self._compile(feeds)
            if entry[1]:
                self._compiled[key] = (None, entry[1])
                key = key + (tuple(feeds[k].tobytes() for k in entry[1]),)
            self._compiled[key] = entry
        model, baked = entry
        outs = model.run({k: v for k, v in feeds.items() if k not in baked})
        return tuple(outs[name] for name in self.output_names)


class NutshellBackend(Backend):
    @classmethod
    def is_compatible(cls, model, device="CPU", **kwargs):
        return device.upper().startswith("CPU")

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        if not isinstance(model, onnx.ModelProto):
            model = onnx.load_model_from_string(bytes(model))
        return NutshellRep(model, threads=kwargs.get("threads", 1))

    @classmethod
    def run_model(cls, model, inputs, device="CPU", **kwargs):
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def supports_device(cls, device):
        return device.upper().startswith("CPU")


prepare = NutshellBackend.prepare
run_model = NutshellBackend.run_model
supports_device = NutshellBackend.supports_device
is_compatible = NutshellBackend.is_compatible
