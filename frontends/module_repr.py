"""print(net) as PyTorch prints it: the layer tree, each layer with its
extra_repr. Layers may define extra_repr themselves; those that do not get
theirs from the table here, read off their attributes."""


def _one(v):
    """torch prints kernel_size=2 when given 2 and (3, 5) when given a pair."""
    return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else v


def _conv(m):
    out_c, in_per_group, *kernel = m.weight.shape
    text = f"{in_per_group * m.groups}, {out_c}, kernel_size={tuple(kernel)}, stride={m.stride}"
    if m.padding != (0, 0):
        text += f", padding={m.padding}"
    if m.dilation != (1, 1):
        text += f", dilation={m.dilation}"
    if m.groups != 1:
        text += f", groups={m.groups}"
    return text + (", bias=False" if m.bias is None else "")


def _pool(m):
    text = f"kernel_size={_one(m.kernel)}, stride={_one(m.stride)}, padding={_one(m.padding)}"
    if hasattr(m, "dilation"):
        return text + f", dilation={_one(m.dilation)}, ceil_mode={bool(m.ceil_mode)}"
    return text


def _activation(m):
    names = {"alpha": "alpha"}
    return ", ".join(f"{names.get(k, k)}={v}" for k, v in getattr(m, "attrs", {}).items())


EXTRA = {
    "Linear": lambda m: f"in_features={m.in_features}, out_features={m.out_features}, "
                        f"bias={m.bias is not None}",
    "Conv2d": _conv,
    "BatchNorm2d": lambda m: f"{m.weight.shape[0]}, eps={m.eps}, momentum={m.momentum}, affine=True, "
                             "bias=True, track_running_stats=True",     # torch 2.13's wording
    "MaxPool2d": _pool, "AvgPool2d": _pool,
    "AdaptiveAvgPool2d": lambda m: "output_size=1",
    "Flatten": lambda m: f"start_dim={m.start_dim}, end_dim={getattr(m, 'end_dim', -1)}",
    "Dropout": lambda m: f"p={m.p}, inplace=False",
    "Maxout": lambda m: f"pool_size={m.pool_size}",
}


def default_extra_repr(module):
    fn = EXTRA.get(type(module).__name__)
    if fn is not None:
        try:
            return fn(module)
        except AttributeError:         # a same-named user class with other attributes
            return ""
    return _activation(module) if hasattr(module, "attrs") else ""


def _module_list_repr(module):
    """torch's ModuleList repr: runs of identical children as `(0-1): 2 x Block(...)`."""
    runs = []
    for i, child in enumerate(module.children()):
        text = repr(child)
        if runs and runs[-1][2] == text:
            runs[-1][1] = i
        else:
            runs.append([i, i, text])
    if not runs:
        return type(module).__name__ + "()"
    lines = [(f"({a}): {t}" if a == b else f"({a}-{b}): {b - a + 1} x {t}").replace("\n", "\n  ")
             for a, b, t in runs]
    return type(module).__name__ + "(\n  " + "\n  ".join(lines) + "\n)"


def module_repr(module):
    from .dsl import Module
    if type(module).__name__ == "ModuleList":
        return _module_list_repr(module)
    if type(module).extra_repr is Module.extra_repr:       # not overridden: the table's
        extra = default_extra_repr(module)
    else:
        extra = module.extra_repr()
    lines = extra.split("\n") if extra else []
    for name, child in module.named_children():
        text = repr(child).replace("\n", "\n  ")
        lines.append(f"({name}): {text}")
    name = type(module).__name__
    if not module._modules:
        return f"{name}({extra})"
    return name + "(\n  " + "\n  ".join(lines) + "\n)"
