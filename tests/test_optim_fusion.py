"""The optimizer update in one loop per parameter (passes/elementwise_fusion.py's
_merge_outputs): the new weight and every new state slot written by one fused loop,
bit-identical to the loops it replaces (the same float operations in the same
order), at one thread and at two."""
import numpy as np
import pytest

import nutshell as ns
import nutshell.training as training
from nutshell.compiler.ir import GraphBuilder, verify
from nutshell.compiler.passes import elementwise_fusion

nn = ns.nn
OPTIMIZERS = {
    "sgd_momentum": lambda: ns.optim.SGD(lr=0.1, momentum=0.9),
    "sgd_nesterov_wd_dampening": lambda: ns.optim.SGD(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
    "adam": lambda: ns.optim.Adam(lr=1e-2, weight_decay=1e-3),
    "adamw": lambda: ns.optim.AdamW(lr=1e-2),
    "adagrad": lambda: ns.optim.Adagrad(lr=0.1, lr_decay=0.01),
    "rmsprop_centered_momentum": lambda: ns.optim.RMSprop(lr=0.01, momentum=0.9, centered=True),
}


def _momentum_graph():
    """SGD with momentum on one tensor: buf = v * keep + g * take; p - buf * lr."""
    b = GraphBuilder("sgd", fold=False)
    p, g, v = (b.add_input(n, "float32", (5, 37)) for n in ("p", "g", "v"))
    keep, take, lr = (b.add_input(n, "float32", ()) for n in ("keep", "take", "lr"))
    buf = b.add_node("Add", [b.add_node("Mul", [v, keep]), b.add_node("Mul", [g, take])])
    b.set_outputs([b.add_node("Sub", [p, b.add_node("Mul", [buf, lr])]), buf])
    return verify(b.build())


def _without_merging(monkeypatch):
    monkeypatch.setattr(elementwise_fusion, "_merge_outputs", lambda graph: graph)
    monkeypatch.setattr(training, "_OPTIMISED", {})


def test_state_and_weight_in_one_loop_structure_and_numbers(rng, monkeypatch):
    g = _momentum_graph()
    fused = verify(elementwise_fusion.fuse_elementwise(g))
    assert [n.op for n in fused.nodes] == ["FusedElementwise"]
    node = fused.nodes[0]
    assert node.outputs == tuple(g.output_names()) and node.attrs["extra"] == (2,)
    assert [s[0] for s in node.attrs["program"]] == ["Mul", "Mul", "Add", "Mul", "Sub"]
    feeds = {n: rng.standard_normal((5, 37)).astype(np.float32) for n in ("p", "g", "v")}
    feeds.update(keep=np.float32(0.9), take=np.float32(1.0), lr=np.float32(0.1))
    want = ns.run_reference(g, feeds)
    for name, value in ns.run_reference(fused, feeds).items():
        np.testing.assert_array_equal(value, want[name])
    merged = {t: ns.compile(g, threads=t).run(feeds) for t in (1, 2)}
    _without_merging(monkeypatch)
    for t in (1, 2):
        apart = ns.compile(g, threads=t).run(feeds)
        for name in apart:            # bit-identical to the two loops
            np.testing.assert_array_equal(merged[t][name], apart[name])
        np.testing.assert_allclose(apart[g.output_names()[0]], want[g.output_names()[0]], rtol=1e-6)


def _trainer(make_optimizer, threads):
    ns.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                        nn.Linear(8 * 6 * 6, 10))
    return net, ns.compile_training(net, input_shape=(4, 3, 6, 6), optimizer=make_optimizer(), threads=threads)


@pytest.mark.parametrize("name, threads", [(n, 2) for n in OPTIMIZERS] + [("sgd_momentum", 1), ("adam", 1)])
def test_training_steps_bit_identical_to_separate_loops(name, threads, rng, monkeypatch):
    x = rng.standard_normal((4, 3, 6, 6)).astype(np.float32)
    y = rng.integers(0, 10, 4)
    runs = []
    for merge in (True, False):
        if not merge:
            _without_merging(monkeypatch)
        net, trainer = _trainer(OPTIMIZERS[name], threads)
        losses = [trainer.step(x, y) for _ in range(3)]
        runs.append((losses, net.state_dict(), trainer.state(), trainer))
    (l1, p1, s1, merged), (l2, p2, s2, apart) = runs
    assert l1 == l2
    for k in p2:
        np.testing.assert_array_equal(p1[k], p2[k], err_msg=k)
    assert s1.keys() == s2.keys()     # the weights, buffers and every optimizer slot
    for k in s2:
        np.testing.assert_array_equal(s1[k], s2[k], err_msg=k)
    nodes = sum(n.op == "FusedElementwise" for n in merged.model.graph.nodes)
    assert nodes < sum(n.op == "FusedElementwise" for n in apart.model.graph.nodes)
    slots = len(OPTIMIZERS[name]().slots)
    multi = [n for n in merged.model.graph.nodes if n.op == "FusedElementwise" and len(n.outputs) == 1 + slots]
    assert len(multi) >= 6            # conv w, b; BN scale, bias; linear w, b: each one loop
