"""The NumPy reference executor: runs any Graph with the ops' references.
It is the oracle every compiled result is tested against."""
import numpy as np

from nutshell.compiler.ops import get_op


def run_reference(graph, feeds, keep_all=False):
    """feeds: name -> array for each graph input. Returns name -> array of outputs
    (of every value with keep_all)."""
    env = dict(graph.constants)
    for v in graph.inputs:
        env[v.name] = np.asarray(feeds[v.name], dtype=v.type.dtype.numpy).reshape(v.type.shape)
    for node in graph.nodes:
        opdef = get_op(node.op)
        args = [env[i] if i else None for i in node.inputs]
        while args and args[-1] is None:
            args.pop()
        result = opdef.reference(node.attrs, *args)
        results = result if isinstance(result, tuple) else (result,)
        for name, value, in zip(node.outputs, results):
            if name:
                env[name] = np.asarray(value, dtype=graph.types[name].dtype.numpy).reshape(
                    graph.types[name].shape)
    return env if keep_all else {v.name: env[v.name] for v in graph.outputs}


def first_nonfinite(graph, feeds):
    """The first node (in order) whose float output holds a NaN or an infinity."""
    with np.errstate(all="ignore"):          # the point is to find the non-finite values
        env = run_reference(graph, feeds, keep_all=True)
    for node in graph.nodes:
        for name in node.outputs:
            value = env.get(name)
            if value is not None and np.issubdtype(value.dtype, np.floating) and \
                    not np.all(np.isfinite(value)):
                return node
    return None
