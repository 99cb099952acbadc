"""Fuzzing the ONNX loader (hypothesis, bounded): random bytes and mutated real
models give a Graph or a nutshell exception — never another exception, a crash or
a hang. Mutations: byte flips, truncation, splices, and integer fields set to
hostile values in the parsed protobuf. test_fuzzer_fast_variant runs
tools/fuzz_loader.py itself (child processes, limits, ONNX Runtime) on a few
cases; the long run is `python tools/fuzz_loader.py --cases 10000 --jobs 3`."""
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from onnx import TensorProto, helper

import nutshell as ns
from onnx_models import conv_block_model, init, make_model, vi

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import fuzz_loader  # noqa: E402

SEED_MODEL = conv_block_model().SerializeToString()
SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def load_or_reject(data):
    try:
        graph = ns.load_onnx(data)
        if sum(t.size for t in graph.types.values()) < 1 << 20:   # small enough: compile it too
            ns.compile(graph, threads=1)
    except ns.NutshellError:
        return None
    return graph


@SETTINGS
@given(st.binary(max_size=2048))
def test_random_bytes(data):
    load_or_reject(data)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, len(SEED_MODEL) - 1), st.integers(0, 255)), max_size=8),
       st.integers(1, len(SEED_MODEL)))
def test_mutated_model_bytes(flips, keep):
    data = bytearray(SEED_MODEL)
    for pos, value in flips:
        data[pos] = value
    load_or_reject(bytes(data[:keep]))


HOSTILE = [0, -1, 1, 2 ** 31 - 1, 2 ** 62, -(2 ** 62), 10 ** 6]


@SETTINGS
@given(st.integers(0, 10 ** 6), st.sampled_from(HOSTILE), st.sampled_from(["dim", "attr", "dtype", "ints"]))
def test_hostile_fields(pick, value, where):
    model = onnx.load_model_from_string(SEED_MODEL)
    g = model.graph
    if where == "dim":
        dims = [d for v in list(g.input) + list(g.output) for d in v.type.tensor_type.shape.dim]
        dims[pick % len(dims)].dim_value = max(value, 0) if value >= 0 else 0
        if value < 0:
            dims[pick % len(dims)].dim_param = "N"
    elif where == "attr":
        attrs = [a for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.INT]
        if attrs:
            attrs[pick % len(attrs)].i = value
    elif where == "ints":
        attrs = [a for n in g.node for a in n.attribute if a.type == onnx.AttributeProto.INTS]
        if attrs:
            a = attrs[pick % len(attrs)]
            a.ints[pick % len(a.ints)] = value
    else:
        inits = list(g.initializer)
        inits[pick % len(inits)].data_type = abs(value) % 30
    load_or_reject(model.SerializeToString())


def test_truncations_of_every_length_prefix():
    for keep in np.linspace(0, len(SEED_MODEL), 60).astype(int):
        load_or_reject(SEED_MODEL[:keep])


def test_fuzzer_fast_variant(tmp_path):
    """40 mutated cases of the hand-built seed, each in a child under RLIMIT_AS and a
    timeout, compared with ONNX Runtime: no signal, hang, stray exception or mismatch."""
    args = fuzz_loader.parse_args(["--cases", "40", "--start", "100000", "--seeds", "conv_block",
                                   "--out", str(tmp_path), "--timeout", "60", "--report-every", "1000"])
    counts = fuzz_loader.fuzz(args, log=lambda line: None)
    assert sum(counts.values()) == 40
    assert not {k: v for k, v in counts.items() if k in fuzz_loader.FAILURES}, \
        sorted(p.name for p in (tmp_path / "failures").iterdir())


def conv_on_empty_batch():
    """Found by the fuzzer (case 1692): a batch of 0 made Conv's image plan take max() of nothing."""
    rng = np.random.default_rng(0)
    node = helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])
    return make_model([node], [vi("x", [0, 3, 8, 8])], [vi("y", [0, 4, 8, 8])],
                      [init("w", rng.standard_normal((4, 3, 3, 3)).astype(np.float32))])


def test_fuzzer_findings_run_like_onnxruntime():
    data = conv_on_empty_batch().SerializeToString()
    assert fuzz_loader.run_case(data) == ("agree", "")


def test_resize_of_a_huge_input_needs_no_probe():
    """Found by the fuzzer (case 5776): Resize's shape inference ran onnx's reference on
    a zero probe as large as the input (256 GiB for a 2**31-long axis)."""
    node = helper.make_node("Resize", ["x", "", "k"], ["y"])
    m = make_model([node], [vi("x", [1, 8, 2 ** 31 - 1, 8])], [vi("y", [1, 8, 2 ** 30 - 1, 8])],
                   [init("k", np.array([1, 1, 0.5, 1], np.float32))])
    graph = ns.load_onnx(m.SerializeToString())
    assert graph.outputs[0].type.shape == (1, 8, 2 ** 30 - 1, 8)


def test_resize_shape_formula_matches_the_reference():
    from nutshell.compiler.ops import resize
    rng = np.random.default_rng(0)
    for _ in range(200):
        shape = tuple(int(d) for d in rng.integers(1, 9, rng.integers(1, 5)))
        attrs = dict(resize.ATTRS, keep_aspect_ratio_policy=str(rng.choice(["stretch", "not_larger",
                                                                            "not_smaller"])))
        if rng.random() < 0.5:
            scales = rng.choice([0.5, 1 / 3, 0.75, 1.5, 2.7, 3.3], len(shape)).astype(np.float32)
            sizes, attrs["keep_aspect_ratio_policy"] = None, "stretch"
        else:
            scales, sizes = None, rng.integers(1, 12, len(shape)).astype(np.int64)
        probe = resize._out_shape.__wrapped__(shape, None, resize._key(scales), resize._key(sizes),
                                              resize._akey(attrs))
        assert resize._formula_shape(shape, scales, sizes, attrs) == probe


def test_resize_tap_table_has_a_limit():
    """Found by the fuzzer (case 6661): a 500000-long axis asked for a 1.8 TiB tap table."""
    node = helper.make_node("Resize", ["x", "", "k"], ["y"], name="up")
    m = make_model([node], [vi("x", [1, 1, 20000, 1])], [vi("y", [1, 1, 40000, 1])],
                   [init("k", np.array([1, 1, 2, 1], np.float32))])
    with pytest.raises(ns.ShapeError, match="tap table"):
        ns.compile(ns.load_onnx(m.SerializeToString()), threads=1)


def test_unknown_element_type_number_is_named():     # found by the fuzzer: a KeyError
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2])])
    m.graph.input[0].type.tensor_type.elem_type = 127
    with pytest.raises((ns.UnsupportedTypeError, ns.ModelLoadError), match="127"):
        ns.load_onnx(m.SerializeToString())


def test_declared_output_type_must_match():      # found by the fuzzer; ONNX Runtime refuses it too
    m = make_model([helper.make_node("Relu", ["x"], ["y"])], [vi("x", [2])], [vi("y", [2], TensorProto.INT32)])
    with pytest.raises(ns.UnsupportedTypeError, match="'y' is declared int32 but computes float32"):
        ns.load_onnx(m.SerializeToString())


def test_omitted_concat_input_rejected():          # found by the fuzzer: an AttributeError
    m = make_model([helper.make_node("Concat", ["x", "", "x"], ["y"], axis=0)], [vi("x", [2])], [vi("y", [4])])
    with pytest.raises(ns.ShapeError, match="omitted"):
        ns.load_onnx(m.SerializeToString())
