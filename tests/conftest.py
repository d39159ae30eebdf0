import contextlib

import numpy as np
import pytest


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def rel_err(actual, expected):
    """max |a - e| / max(1, max |e|): relative to the output's scale."""
    actual = np.asarray(actual, np.float64)
    expected = np.asarray(expected, np.float64)
    if expected.size == 0:
        return 0.0
    return float(np.abs(actual - expected).max() / max(1.0, np.abs(expected).max()))


def record_calls(monkeypatch, module, name):
    """``module.name`` wrapped (for the test) to append 1 to the returned list per call."""
    calls = []
    real = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@contextlib.contextmanager
def num_threads(n):
    """fastconv's thread count set to n inside the block, restored after it."""
    import fastconv as fc
    before = fc.get_num_threads()
    fc.set_num_threads(n)
    try:
        yield
    finally:
        fc.set_num_threads(before)


def quantize_static_with_onnxruntime(nodes, inits, x_shape, tmp_path, rng, form="qdq"):
    """The float graph of ``nodes`` (input "x" of x_shape, output "y"; inits: name ->
    float array) quantized by onnxruntime's own quantize_static (per-channel int8 weights,
    uint8 activations) in QDQ form or (form "qoperator") the operator form, calibrated on
    4 random batches: (path of the quantized model, the batches).  Skips without
    onnxruntime's quantization tool."""
    import pytest
    quant = pytest.importorskip("onnxruntime.quantization")
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    graph = helper.make_graph(
        nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    fp, qp = tmp_path / "f.onnx", tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), fp)
    calib = [rng.standard_normal(x_shape).astype(np.float32) for _ in range(4)]

    class Reader(quant.CalibrationDataReader):
        def __init__(self):
            self.it = iter({"x": x} for x in calib)

        def get_next(self):
            return next(self.it, None)

    fmt = quant.QuantFormat.QOperator if form == "qoperator" else quant.QuantFormat.QDQ
    quant.quantize_static(str(fp), str(qp), Reader(), quant_format=fmt, per_channel=True,
                          activation_type=quant.QuantType.QUInt8,
                          weight_type=quant.QuantType.QInt8)
    return qp, calib
