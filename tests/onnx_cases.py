"""Run the ONNX node conformance cases (shipped in the ``onnx`` package) through fc.from_onnx.

Each case's first input stays a graph input; the others (weights, shapes,
indices, scales) become initializers, as they are in an exported model.
"""
import numpy as np
from onnx import helper, numpy_helper
from onnx.backend.test.case.node import collect_testcases

import fastconv as fc

OPS = ("Conv", "ConvTranspose", "MaxPool", "AveragePool", "BatchNormalization",
       "GlobalAveragePool", "GlobalMaxPool", "Gemm", "MatMul", "Relu", "Clip", "HardSigmoid",
       "HardSwish", "Sigmoid", "LeakyRelu", "Tanh", "Add", "Sub", "Mul", "Div", "Flatten",
       "Reshape", "Transpose", "Concat", "Resize", "Softmax", "Pad", "Identity", "Dropout",
       "Shape", "Gather", "Cast", "Slice", "Unsqueeze", "Squeeze", "ReduceMean", "Upsample",
       "QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul")

_ALL = None


def cases():
    global _ALL
    if _ALL is None:
        # collect_testcases registers cases only on its first call: collect everything
        # once and filter by the node's op type here
        _ALL = [c for c in collect_testcases(None)
                if len(c.model.graph.node) == 1 and c.model.graph.node[0].op_type in OPS]
    return _ALL


class Skip(Exception):
    pass


def frozen_model(case, inputs):
    """The case's model with every input but the first turned into an initializer."""
    m = case.model
    g = m.graph
    first = np.asarray(inputs[0])
    if first.dtype not in (np.float32, np.uint8, np.int8):
        raise Skip(f"first input is {first.dtype}; fastconv models take float32 inputs "
                   "(and the uint8 / int8 of a quantized graph)")
    if any(np.asarray(v).dtype == object for v in inputs):
        raise Skip("inputs of a type NumPy does not hold (float8, int4, strings, sequences)")
    inits = [numpy_helper.from_array(np.asarray(v), vi.name)
             for vi, v in zip(list(g.input)[1:], inputs[1:])]
    graph = helper.make_graph(list(g.node), g.name, [g.input[0]], list(g.output),
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=list(m.opset_import))
    model.ir_version = m.ir_version
    return model


def run_case(case):
    """[(actual, expected)] for each data set; raises Skip for cases outside fastconv's scope."""
    out = []
    for inputs, outputs in case.data_sets:
        model = frozen_model(case, inputs)
        try:
            fm = fc.from_onnx(model)
        except fc.UnsupportedError as exc:
            raise Skip(str(exc).split("\n  - ", 1)[-1]) from None
        except ValueError as exc:
            if "opset" in str(exc):
                raise Skip(str(exc)) from None
            raise
        y = fm(np.asarray(inputs[0]))
        ys = y if isinstance(y, tuple) else (y,)
        out.append(list(zip(ys, [np.asarray(o) for o in outputs])))
    return out
