"""onnx's node conformance cases for the ops the ONNX frontend covers (the
"expanded" variants left out), as the onnx package generates them."""
import warnings

OPS = """Abs Add ArgMax AveragePool BatchNormalization Cast Ceil Celu Clip Concat Constant
ConstantOfShape Conv ConvTranspose DepthToSpace Div Dropout Einsum Elu Equal Erf Exp Expand
Flatten Floor Gather Gelu Gemm GlobalAveragePool GlobalMaxPool Greater HardSigmoid HardSwish
Identity InstanceNormalization LayerNormalization LeakyRelu Less Log LogSoftmax LRN LSTM GRU RNN MatMul Max
MaxPool Mean Min Mish Mul Neg Pad Pow PRelu Range Reciprocal ReduceL2 ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceSum ReduceSumSquare Relu Reshape Resize Selu Shape Shrink Sigmoid Sign
Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh ThresholdedRelu Tile
Transpose Trilu Unsqueeze Upsample Where""".split()


def cases():
    from onnx.backend.test.case.node import collect_testcases
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        all_cases = collect_testcases(None)
    ops = set(OPS)
    out = []
    for c in all_cases:
        if c.model is None or "expanded" in c.name:
            continue
        node_ops = {n.op_type for n in c.model.graph.node}
        if node_ops and node_ops <= ops:
            out.append(c)
    return out


def op_of(case):
    return case.model.graph.node[-1].op_type
