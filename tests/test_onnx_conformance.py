"""The ONNX node conformance cases shipped inside the ``onnx`` package: an oracle nobody here wrote."""
import numpy as np
import pytest

import fastconv as fc

onnx = pytest.importorskip("onnx")
from onnx import helper  # noqa: E402
from onnx.backend.test.case.node import collect_testcases  # noqa: E402

OPS = ("Conv", "MaxPool", "AveragePool", "BatchNormalization", "GlobalAveragePool", "Gemm")


def _cases():
    # collect_testcases registers cases only on its first call (later calls return
    # the first call's list, whatever op they ask for): collect everything once
    # and filter by the node's op type here.
    return [(c.model.graph.node[0].op_type, c) for c in collect_testcases(None)
            if c.model.graph.node[0].op_type in OPS]


def _attrs(node):
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _auto_pads(auto_pad, size, kernel, stride, dilation):
    pads_begin, pads_end = [], []
    for n, k, s, d in zip(size, kernel, stride, dilation):
        out = -(-n // s)
        total = max((out - 1) * s + d * (k - 1) + 1 - n, 0)
        small, big = total // 2, total - total // 2
        if auto_pad == "SAME_UPPER":
            pads_begin.append(small)
            pads_end.append(big)
        else:
            pads_begin.append(big)
            pads_end.append(small)
    return pads_begin + pads_end


class Unsupported(Exception):
    pass


def _run(node, inputs):
    a = _attrs(node)
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
    if node.op_type == "Conv":
        x, w = inputs[0], inputs[1]
        if x.ndim != 4:
            raise Unsupported("not 2-D")
        k = a.get("kernel_shape", list(w.shape[2:]))
        st, dil = a.get("strides", [1, 1]), a.get("dilations", [1, 1])
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = _auto_pads(auto_pad, x.shape[2:], k, st, dil)
        else:
            pads = a.get("pads", [0, 0, 0, 0])
        b = inputs[2] if len(inputs) > 2 else None
        return fc.conv2d(x, w, b, tuple(st), (pads[0], pads[2], pads[1], pads[3]), tuple(dil),
                         a.get("group", 1))
    if node.op_type in ("MaxPool", "AveragePool"):
        x = inputs[0]
        if x.ndim != 4 or len(node.output) > 1 or auto_pad != "NOTSET" or x.dtype != np.float32:
            raise Unsupported("not 2-D float32, indices output or auto_pad")
        k = a["kernel_shape"]
        pads = a.get("pads", [0, 0, 0, 0])
        if pads[0] != pads[2] or pads[1] != pads[3]:
            raise Unsupported("asymmetric pooling pads")
        if pads[0] > k[0] // 2 or pads[1] > k[1] // 2:
            raise Unsupported("padding larger than half the kernel (PyTorch rejects it too)")
        st = a.get("strides", [1, 1])
        ceil = bool(a.get("ceil_mode", 0))
        if node.op_type == "MaxPool":
            if a.get("storage_order", 0):
                raise Unsupported("storage_order")
            return fc.max_pool2d(x, tuple(k), tuple(st), (pads[0], pads[1]),
                                 tuple(a.get("dilations", [1, 1])), ceil)
        if "dilations" in a and list(a["dilations"]) != [1, 1]:
            raise Unsupported("dilated average pooling")
        return fc.avg_pool2d(x, tuple(k), tuple(st), (pads[0], pads[1]), ceil,
                             bool(a.get("count_include_pad", 0)))
    if node.op_type == "BatchNormalization":
        if len(node.output) > 1 or a.get("training_mode", 0):
            raise Unsupported("training mode")
        x, scale, bias, mean, var = inputs
        return fc.batch_norm(x, mean, var, scale, bias, a.get("epsilon", 1e-5))
    if node.op_type == "GlobalAveragePool":
        if inputs[0].ndim != 4:
            raise Unsupported("not 2-D")
        return fc.adaptive_avg_pool2d(inputs[0], 1)
    if node.op_type == "Gemm":
        # Y = alpha * A' @ B' + beta * C: the product is fc.linear (y = a @ w.T); the
        # scalars and C's broadcasting are the graph's business, done here in NumPy
        a_in, b_in = inputs[0], inputs[1]
        a_mat = a_in.T if a.get("transA", 0) else a_in
        b_mat = b_in.T if a.get("transB", 0) else b_in
        y = fc.linear(np.ascontiguousarray(a_mat), np.ascontiguousarray(b_mat.T))
        y = np.float32(a.get("alpha", 1.0)) * y
        if len(inputs) > 2:
            y = y + np.float32(a.get("beta", 1.0)) * inputs[2]
        return y
    raise Unsupported(node.op_type)


CASES = _cases()


@pytest.mark.parametrize("op, case", CASES, ids=lambda v: getattr(v, "name", v))
def test_onnx_node_case(op, case):
    node = case.model.graph.node[0]
    for inputs, outputs in case.data_sets:
        try:
            y = _run(node, [np.asarray(i) for i in inputs])
        except Unsupported as why:
            pytest.skip(f"outside fastconv's {op} semantics: {why}")
        expected = np.asarray(outputs[0])
        assert y.shape == expected.shape
        # some hand-written expectations are rounded to 4 digits: use the case's own
        # tolerance where it is looser than ours
        np.testing.assert_allclose(y, expected, rtol=max(1e-4, case.rtol),
                                   atol=max(1e-5, case.atol))


def test_onnx_cases_actually_ran():
    """Guards against the conformance suite silently skipping everything: every op
    contributes runnable cases."""
    ran = {op: 0 for op in OPS}
    for op, case in _cases():
        node = case.model.graph.node[0]
        try:
            for inputs, _ in case.data_sets:
                _run(node, [np.asarray(i) for i in inputs])
            ran[op] += 1
        except Unsupported:
            pass
    assert all(ran[op] >= 1 for op in OPS), ran
    assert sum(ran.values()) >= 30, ran
