"""Every exception nutshell raises on bad input derives from NutshellError."""


class NutshellError(Exception):
    """Base class of all nutshell errors."""


class ModelLoadError(NutshellError):
    """A model file could not be read: garbage, truncated or malformed."""


class UnsupportedOpError(NutshellError):
    """An op (with its domain and opset) that nutshell cannot compile."""

    def __init__(self, op, opset=None, node=None, detail=""):
        where = f" (node '{node}')" if node else ""
        version = f", opset {opset}" if opset is not None else ""
        super().__init__(f"unsupported op '{op}'{version}{where}{': ' + detail if detail else ''}")
        self.op, self.opset, self.node = op, opset, node


class UnsupportedTypeError(NutshellError):
    """A dtype nutshell does not handle."""


class ShapeError(NutshellError):
    """Shapes that do not fit an op's rule, or a wrong shape at run time."""


class GraphError(NutshellError):
    """A structurally invalid graph: cycles, dangling or duplicate values."""


class CompileError(NutshellError):
    """Code generation or LLVM verification failed."""


class InputError(NutshellError, ValueError):
    """Wrong inputs at run time: count, name, dtype, shape or layout."""
