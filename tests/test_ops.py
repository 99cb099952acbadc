"""The per-op matrix: shapes x attributes x ISA widths x threads, compiled code
against the NumPy reference. Tolerance: rtol 1e-4, atol 1e-5 scaled to the
output's magnitude (float32 sums of up to a few thousand terms)."""
import numpy as np
import pytest

import nutshell as ns
from conftest import assert_close, random_feeds, single_op_graph

F = "float32"
RTOL, ATOL = 1e-4, 1e-5

# (op, input specs, attrs, constant inputs)
CASES = [
    ("Add", [(F, (3, 37)), (F, (3, 37))], {}, None),
    ("Add", [(F, (2, 3, 5, 7)), (F, (3, 1, 1))], {}, None),
    ("Sub", [(F, (4, 1)), (F, (1, 33))], {}, None),
    ("Mul", [(F, (2, 16, 9)), (F, (9,))], {}, None),
    ("Div", [(F, (5, 17)), (F, ())], {}, None),
    ("Add", [("int64", (3, 19)), ("int64", (19,))], {}, None),
    ("Mul", [("float64", (3, 21)), ("float64", (3, 21))], {}, None),
    ("Relu", [(F, (1000,))], {}, None),
    ("Relu", [(F, (70000,))], {}, None),
    ("LeakyRelu", [(F, (3, 50))], {"alpha": 0.2}, None),
    ("Elu", [(F, (3, 50))], {"alpha": 0.7}, None),
    ("Sigmoid", [(F, (2, 45))], {}, None),
    ("Tanh", [(F, (2, 45))], {}, None),
    ("Exp", [(F, (31,))], {}, None),
    ("Neg", [(F, (31,))], {}, None),
    ("Abs", [(F, (31,))], {}, None),
    ("MatMul", [(F, (7, 13)), (F, (13, 40))], {}, None),
    ("MatMul", [(F, (64, 100)), (F, (100, 130))], {}, None),
    ("MatMul", [(F, (2, 3, 9, 5)), (F, (5, 17))], {}, None),
    # B packed into L2-sized blocks of panels: several blocks, an edge block, edge rows
    ("MatMul", [(F, (50, 600)), (F, (600, 500))], {}, None),
    # ... and in three k blocks (C resumed from memory, the epilogue only on the last)
    ("MatMul", [(F, (30, 1400)), (F, (1400, 90))], {}, None),
    ("Gemm", [(F, (40, 1300)), (F, (70, 1300)), (F, (70,))], {"transB": 1, "activation": "Relu"}, {1: "w", 2: "w"}),
    ("MatMul", [(F, (3, 5)), (F, (2, 5, 4))], {}, None),
    # per-entry GEMMs shared out among threads: B batched, broadcast along one dim, A broadcast
    ("MatMul", [(F, (4, 3, 9, 5)), (F, (4, 3, 5, 17))], {}, None),
    ("MatMul", [(F, (2, 3, 9, 5)), (F, (1, 3, 5, 7))], {}, None),
    ("MatMul", [(F, (1, 9, 5)), (F, (5, 5, 7))], {}, None),
    ("MatMul", [(F, (13,)), (F, (13, 6))], {}, None),
    ("MatMul", [(F, (1, 70)), (F, (70, 300))], {}, None),     # one row: 8-vector tiles, an edge
    ("MatMul", [(F, (6, 13)), (F, (13,))], {}, None),
    ("Gemm", [(F, (5, 7)), (F, (7, 9)), (F, (9,))], {}, None),
    ("Gemm", [(F, (7, 5)), (F, (9, 7)), (F, (5, 9))], {"transA": 1, "transB": 1, "alpha": 0.5, "beta": 2.0}, None),
    ("Gemm", [(F, (33, 50)), (F, (10, 50)), (F, (10,))], {"transB": 1}, None),
    ("Gemm", [(F, (64, 400)), (F, (120, 400)), (F, (120,))], {"transB": 1}, {1: "w", 2: "w"}),
    ("Conv", [(F, (1, 1, 28, 28)), (F, (6, 1, 5, 5)), (F, (6,))], {"pads": (2, 2, 2, 2)}, {1: "w", 2: "w"}),
    ("Conv", [(F, (2, 3, 11, 13)), (F, (8, 3, 3, 3))], {"strides": (2, 2), "pads": (1, 0, 1, 2)}, {1: "w"}),
    ("Conv", [(F, (1, 4, 9, 9)), (F, (6, 2, 3, 3)), (F, (6,))], {"group": 2, "dilations": (2, 2)}, {1: "w", 2: "w"}),
    ("Conv", [(F, (1, 8, 6, 6)), (F, (8, 1, 3, 3))], {"group": 8, "pads": (1, 1, 1, 1)}, {1: "w"}),
    ("Conv", [(F, (2, 16, 7, 7)), (F, (32, 16, 1, 1)), (F, (32,))], {}, {1: "w", 2: "w"}),
    # squeeze-excitation 1x1 convs on 1x1 maps: rows as dot products (n == 1), one image per thread
    ("Conv", [(F, (1, 40, 1, 1)), (F, (70, 40, 1, 1)), (F, (70,))], {}, {1: "w", 2: "w"}),
    ("Conv", [(F, (3, 37, 1, 1)), (F, (21, 37, 1, 1)), (F, (21,))], {}, {1: "w", 2: "w"}),
    # packed B per thread (one image each) and for the image left over
    ("Conv", [(F, (3, 32, 20, 20)), (F, (30, 32, 3, 3)), (F, (30,))], {"pads": (1, 1, 1, 1)}, {1: "w", 2: "w"}),
    # small maps at batch > 1: several images' columns in one GEMM (pointwise with a
    # fused residual and ReLU; im2col with an image left over at 2 threads)
    ("Conv", [(F, (4, 24, 7, 7)), (F, (40, 24, 1, 1)), (F, (40,)), (F, (4, 40, 7, 7))], {"activation": "Relu"},
     {1: "w", 2: "w"}),
    ("Conv", [(F, (5, 16, 9, 9)), (F, (20, 16, 3, 3))], {"strides": (2, 2), "pads": (1, 1, 1, 1)}, {1: "w"}),
    # Winograd F(2x2, 3x3) with weights transformed at run time (they are inputs), odd
    # sizes and one-sided pads (partial 4x4 tiles at every edge)
    ("Conv", [(F, (3, 17, 17, 16)), (F, (20, 17, 3, 3)), (F, (20,))], {"pads": (1, 0, 0, 1)}, None),
    # several images' tiles in one set of GEMMs (4 per thread at 1 thread, 2 at 2)
    ("Conv", [(F, (4, 16, 7, 7)), (F, (16, 16, 3, 3)), (F, (16,))], {"pads": (1, 1, 1, 1)}, {1: "w", 2: "w"}),
    # one image on two threads: bands of tile rows (7 rows: 4 and 3), constant and run-time weights
    ("Conv", [(F, (1, 17, 13, 16)), (F, (20, 17, 3, 3)), (F, (20,))], {"pads": (1, 1, 1, 1)}, {1: "w", 2: "w"}),
    ("Conv", [(F, (1, 16, 14, 9)), (F, (16, 16, 3, 3))], {"pads": (0, 1, 1, 0)}, None),
    # maps of more than 128 tiles go by bands of tile rows (17 rows of 15 tiles: 8, 8, 1)
    ("Conv", [(F, (2, 16, 34, 30)), (F, (18, 16, 3, 3)), (F, (18,))], {"pads": (1, 1, 1, 1)}, {2: "w"}),
    ("Conv", [(F, (3, 16, 33, 29)), (F, (16, 16, 3, 3))], {"pads": (0, 1, 1, 0)}, None),
    # 4x4 maps through Winograd once the batch gives 64 tiles (CIFAR ResNet's last stage)
    ("Conv", [(F, (16, 16, 4, 4)), (F, (16, 16, 3, 3))], {"pads": (1, 1, 1, 1)}, None),
    # ... and when the output has half the channels or fewer (DenseNet's 128 -> 32)
    ("Conv", [(F, (1, 40, 9, 7)), (F, (18, 40, 3, 3))], {"pads": (1, 1, 1, 1)}, {1: "w"}),
    ("Conv", [(F, (1, 3, 10, 10)), (F, (4, 3, 3, 3))], {"auto_pad": "SAME_UPPER", "strides": (2, 2)}, {1: "w"}),
    ("MaxPool", [(F, (2, 3, 8, 8))], {"kernel_shape": (2, 2), "strides": (2, 2)}, None),
    ("MaxPool", [(F, (1, 2, 9, 11))], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1)}, None),
    ("MaxPool", [(F, (1, 2, 10, 10))], {"kernel_shape": (3, 3), "strides": (2, 2), "ceil_mode": 1}, None),
    ("MaxPool", [(F, (1, 2, 10, 10))], {"kernel_shape": (2, 2), "dilations": (2, 2)}, None),
    ("AveragePool", [(F, (1, 3, 7, 7))], {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1)}, None),
    ("AveragePool", [(F, (1, 3, 7, 7))], {"kernel_shape": (3, 3), "pads": (1, 1, 1, 1), "count_include_pad": 1}, None),
    ("AveragePool", [(F, (1, 2, 8, 9))], {"kernel_shape": (2, 2), "strides": (2, 2), "ceil_mode": 1}, None),
    ("GlobalAveragePool", [(F, (2, 5, 7, 7))], {}, None),
    ("BatchNormalization", [(F, (2, 3, 4, 5)), (F, (3,)), (F, (3,)), (F, (3,)), (F, (3,))], {"epsilon": 1e-3}, "bn"),
    ("Softmax", [(F, (3, 37))], {}, None),
    ("Softmax", [(F, (2, 4, 5))], {"axis": 1}, None),
    ("LogSoftmax", [(F, (5, 10))], {"axis": -1}, None),
    ("LogSoftmax", [(F, (3, 6, 2))], {"axis": 0}, None),
    ("Reshape", [(F, (2, 3, 4)), ("int64", (2,))], {}, {1: np.array([4, -1])}),
    ("Flatten", [(F, (2, 3, 4))], {"axis": 2}, None),
    ("Transpose", [(F, (2, 3, 4))], {"perm": (2, 0, 1)}, None),
    ("Transpose", [(F, (5, 37))], {}, None),
    # register tiles: full and edge tiles, NCHW <-> NHWC, an outer axis, 64-bit lanes
    ("Transpose", [(F, (37, 45))], {}, None),
    ("Transpose", [(F, (2, 20, 5, 33))], {"perm": (0, 2, 3, 1)}, None),
    ("Transpose", [(F, (1, 7, 9, 96))], {"perm": (0, 3, 1, 2)}, None),
    ("Transpose", [(F, (3, 40, 70))], {"perm": (2, 0, 1)}, None),
    ("Transpose", [("int64", (19, 33))], {}, None),
    ("Concat", [(F, (2, 3, 4)), (F, (2, 5, 4)), (F, (2, 1, 4))], {"axis": 1}, None),
    ("Concat", [(F, (2, 3)), (F, (2, 20))], {"axis": -1}, None),
    ("ReduceMean", [(F, (2, 3, 4, 5))], {"axes": (2, 3)}, None),
    ("ReduceSum", [(F, (2, 3, 40))], {"axes": (1,), "keepdims": 0}, None),
    ("ReduceSum", [(F, (6, 33))], {}, None),
    ("ReduceMax", [(F, (3, 4, 37))], {"axes": (2,)}, None),
    ("ReduceMin", [(F, (3, 4, 37))], {"axes": (0, 1), "keepdims": 0}, None),
    ("ReduceMean", [(F, (3, 4, 5)), ("int64", (1,))], {"keepdims": 1}, {1: np.array([-1])}),
    ("Resize", [(F, (1, 2, 3, 4)), None, (F, (4,))], {"coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, {2: np.array([1, 1, 2, 2], np.float32)}),
    ("Resize", [(F, (1, 2, 5, 4)), None, None, ("int64", (4,))], {}, {3: np.array([1, 2, 7, 9])}),
    ("Identity", [(F, (3, 4))], {}, None),
    ("Dropout", [(F, (3, 4))], {}, None),
    ("Maxout", [(F, (4, 12))], {"pool_size": 3}, None),
    ("Cast", [(F, (3, 20))], {"to": 7}, None),
    ("Cast", [("int64", (3, 20))], {"to": 1}, None),
    ("Greater", [(F, (3, 5)), (F, (5,))], {}, None),
    ("Mod", [("int64", (3, 17)), ("int64", (17,))], {}, {1: np.array([3, -3, 5, -5, 7, 2, -2, 4, 1, 9, -9, 6, 8, -8, 3, 2, 5])}),
    ("Mod", [(F, (40,)), (F, (40,))], {"fmod": 1}, {1: np.linspace(0.5, 3, 40).astype(np.float32)}),
    ("Equal", [("int64", (4, 1)), ("int64", (1, 7))], {}, None),
    ("Where", [("bool", (3, 17)), (F, (3, 17)), (F, (17,))], {}, None),
    ("Expand", [(F, (3, 1)), ("int64", (3,))], {}, {1: np.array([2, 3, 20])}),
    ("Slice", [(F, (5, 40)), ("int64", (2,)), ("int64", (2,))], {}, {1: np.array([1, 3]), 2: np.array([4, -2])}),
    ("ConvGradInput", [(F, (2, 6, 5, 3)), (F, (6, 2, 3, 3))], {"group": 2, "strides": (2, 2), "pads": (1, 0, 1, 1), "dilations": (1, 2), "input_shape": (2, 4, 9, 9)}, {1: "w"}),
    ("ConvGradInput", [(F, (3, 5, 8, 8)), (F, (5, 3, 3, 3))], {"pads": (1, 1, 1, 1), "input_shape": (3, 3, 8, 8)}, {1: "w"}),
    # stride > 1 by phases (each phase's taps fixed): uneven strides, and a 1x1 whose odd pixels get nothing
    ("ConvGradInput", [(F, (2, 5, 3, 5)), (F, (5, 3, 3, 3))], {"strides": (3, 2), "pads": (1, 1, 0, 1), "input_shape": (2, 3, 10, 10)}, {1: "w"}),
    ("ConvGradInput", [(F, (2, 4, 3, 4)), (F, (4, 3, 1, 1))], {"strides": (2, 2), "input_shape": (2, 3, 6, 7)}, {1: "w"}),
    # through Winograd (dY convolved with W flipped), pads 0 and one-sided
    ("ConvGradInput", [(F, (3, 16, 15, 14)), (F, (16, 18, 3, 3))], {"input_shape": (3, 18, 17, 16)}, {1: "w"}),
    ("ConvGradInput", [(F, (2, 20, 16, 15)), (F, (20, 17, 3, 3))], {"pads": (1, 0, 0, 1), "input_shape": (2, 17, 17, 16)}, {1: "w"}),
    ("ConvGradWeight", [(F, (2, 4, 9, 9)), (F, (2, 6, 5, 3))], {"group": 2, "strides": (2, 2), "pads": (1, 0, 1, 1), "dilations": (1, 2), "weight_shape": (6, 2, 3, 3)}, None),
    ("ConvGradWeight", [(F, (3, 3, 8, 8)), (F, (3, 5, 8, 8))], {"pads": (1, 1, 1, 1), "weight_shape": (5, 3, 3, 3)}, None),
    # B packed (k*n large), a batch that leaves an image for the threads to share, and 1x1 without im2col
    ("ConvGradWeight", [(F, (3, 8, 16, 16)), (F, (3, 70, 16, 16))], {"pads": (1, 1, 1, 1), "weight_shape": (70, 8, 3, 3)}, None),
    ("ConvGradWeight", [(F, (4, 7, 6, 5)), (F, (4, 9, 6, 5))], {"weight_shape": (9, 7, 1, 1)}, None),
    ("ConvGradWeight", [(F, (1, 8, 12, 12)), (F, (1, 40, 12, 12))], {"pads": (1, 1, 1, 1), "weight_shape": (40, 8, 3, 3)}, None),
    # through Winograd (16 GEMMs over the batch's tiles): odd maps, one-sided pads, a batch left over
    ("ConvGradWeight", [(F, (3, 16, 9, 11)), (F, (3, 20, 9, 11))], {"pads": (1, 1, 1, 1), "weight_shape": (20, 16, 3, 3)}, None),
    ("ConvGradWeight", [(F, (2, 17, 10, 9)), (F, (2, 16, 9, 8))], {"pads": (1, 0, 0, 1), "weight_shape": (16, 17, 3, 3)}, None),
    # ... by bands of tile rows past 128 tiles an image: whole bands, then an odd last pixel row
    ("ConvGradWeight", [(F, (3, 16, 33, 30)), (F, (3, 18, 33, 30))], {"pads": (1, 1, 1, 1), "weight_shape": (18, 16, 3, 3)}, None),
    ("ConvGradWeight", [(F, (2, 16, 34, 31)), (F, (2, 16, 33, 30))], {"pads": (1, 0, 0, 1), "weight_shape": (16, 16, 3, 3)}, None),
    # Winograd, 3 images of 16 tiles on 2 threads (the weight gradient: one step, its 16 GEMMs shared out)
    ("Conv", [(F, (3, 64, 8, 8)), (F, (64, 64, 3, 3))], {"pads": (1, 1, 1, 1)}, None),
    ("ConvGradInput", [(F, (3, 64, 8, 8)), (F, (64, 64, 3, 3))], {"pads": (1, 1, 1, 1), "input_shape": (3, 64, 8, 8)}, None),
    ("ConvGradWeight", [(F, (3, 64, 8, 8)), (F, (3, 64, 8, 8))], {"pads": (1, 1, 1, 1), "weight_shape": (64, 64, 3, 3)}, None),
    ("ConvGradInput", [(F, (2, 16, 34, 30)), (F, (16, 17, 3, 3))], {"pads": (1, 1, 1, 1), "input_shape": (2, 17, 34, 30)}, {1: "w"}),
    ("MaxPoolGrad", [(F, (2, 3, 4, 4)), ("int64", (2, 3, 4, 4))], {"kernel_shape": (2, 2), "strides": (2, 2), "input_shape": (2, 3, 8, 8)}, "pool_indices"),
    # ... by phases (windows tile the map exactly): rows longer than a vector, with a tail
    ("MaxPoolGrad", [(F, (2, 3, 20, 19)), ("int64", (2, 3, 20, 19))], {"kernel_shape": (2, 2), "strides": (2, 2), "input_shape": (2, 3, 40, 38)}, "pool_indices"),
    # windows that do not tile: the general path (each pixel sums the windows covering it)
    ("MaxPoolGrad", [(F, (2, 3, 4, 4)), ("int64", (2, 3, 4, 4))], {"kernel_shape": (2, 2), "strides": (2, 2), "pads": (1, 1, 0, 0), "input_shape": (2, 3, 7, 7)}, "pool_indices"),
    # tiling windows with a row and column left over (they get no gradient)
    ("MaxPoolGrad", [(F, (2, 3, 4, 3)), ("int64", (2, 3, 4, 3))], {"kernel_shape": (2, 2), "strides": (2, 2), "input_shape": (2, 3, 9, 7)}, "pool_indices"),
    ("AveragePoolGrad", [(F, (1, 2, 4, 4))], {"kernel_shape": (3, 3), "strides": (2, 2), "pads": (1, 1, 1, 1), "input_shape": (1, 2, 7, 7)}, None),
    ("DropoutMask", [("int64", (1,))], {"ratio": 0.25, "seed": 3, "shape": (7, 300)}, None),
    ("RandomUniform", [("int64", (1,))], {"seed": 3, "shape": (7, 300)}, None),
]


def _consts(case, rng):
    op, specs, attrs, consts = case
    if consts == "pool_indices":     # indices a 2x2/2 MaxPool over these planes could give
        n, c, oh, ow = specs[0][1]
        h, w = attrs["input_shape"][2:]
        top, left = (attrs.get("pads") or (0, 0))[:2]
        base = (np.arange(n * c) * (h * w)).reshape(n, c, 1, 1)
        oy, ox = np.meshgrid(np.arange(oh), np.arange(ow), indexing="ij")
        pick = rng.integers(0, 2, (n, c, oh, ow, 2))
        iy = np.clip(2 * oy - top + pick[..., 0], 0, h - 1)     # a padded tap picks the pixel beside it
        ix = np.clip(2 * ox - left + pick[..., 1], 0, w - 1)
        return {1: (base + iy * w + ix).astype(np.int64)}
    if consts == "bn":
        c = specs[0][1][1]
        return {1: rng.uniform(0.5, 1.5, c).astype(np.float32), 2: rng.normal(size=c).astype(np.float32),
                3: rng.normal(size=c).astype(np.float32), 4: rng.uniform(0.5, 2, c).astype(np.float32)}
    out = {}
    for i, v in (consts or {}).items():
        out[i] = rng.normal(size=specs[i][1]).astype(specs[i][0]) if isinstance(v, str) else v
    return out


def _case_id(case):
    op, specs, attrs, _ = case
    shapes = "x".join("-".join(map(str, s[1])) if s else "_" for s in specs)
    return f"{op}[{shapes}]{''.join(f'{k}' for k in sorted(attrs))}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_op_matches_reference(case, threads, rng):
    op, specs, attrs, _ = case
    graph = single_op_graph(op, specs, attrs, _consts(case, rng))
    feeds = random_feeds(graph, rng)
    want = ns.run_reference(graph, feeds)
    got = ns.compile(graph, threads=threads).run(feeds)
    for name in want:
        assert got[name].shape == want[name].shape
        assert got[name].dtype == want[name].dtype
        assert_close(got[name], want[name], RTOL, ATOL)


NARROW = [c for c in CASES if c[0] in ("Add", "Conv", "MaxPool", "Softmax", "Gemm", "ReduceSum", "MatMul",
                                       "Transpose") or c[0] == "ConvGradWeight" and c[2].get("pads") == (1, 0, 0, 1)]


@pytest.mark.parametrize("case", NARROW, ids=[_case_id(c) for c in NARROW])
@pytest.mark.parametrize("vector_cap", [256, 32], ids=["avx2", "scalar"])
def test_narrow_isa_matches_reference(case, vector_cap, rng):
    """The AVX2-wide and scalar schedules compute the same results."""
    op, specs, attrs, _ = case
    graph = single_op_graph(op, specs, attrs, _consts(case, rng))
    feeds = random_feeds(graph, rng)
    want = ns.run_reference(graph, feeds)
    got = ns.compile(graph, threads=1, vector_cap=vector_cap).run(feeds)
    for name in want:
        assert_close(got[name], want[name], RTOL, ATOL)
