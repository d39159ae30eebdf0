"""Quantized ONNX models in the operator form: QLinearConv, QLinearMatMul and onnxruntime's
com.microsoft QLinearAdd, QLinearGlobalAveragePool, QLinearConcat and QGemm (what its
quantize_static writes with QuantFormat.QOperator), imported onto the int8 kernels and
against onnxruntime on the same graphs.

Both sides compute the same integers up to their rounding of the requantization: onnxruntime
multiplies the int32 sum by one float32 (sx * sw / sy), fastconv scales the sum to a float
and multiplies by 1 / sy, so a value within a float32 rounding of a half-way point may land
one step apart.  The tests hold that to at most one step and to a small share of outputs."""
import pickle

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from conftest import quantize_static_with_onnxruntime

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

_TYPES = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
          np.dtype(np.float32): TensorProto.FLOAT}


def _model(nodes, inits, inputs, outputs):
    """A graph of these nodes: inputs / outputs as (name, dtype, shape or None)."""
    graph = helper.make_graph(
        nodes, "q", [helper.make_tensor_value_info(n, _TYPES[np.dtype(t)], s)
                     for n, t, s in inputs],
        [helper.make_tensor_value_info(n, _TYPES[np.dtype(t)], s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                   helper.make_opsetid("com.microsoft", 1)])


def _both(proto, feeds):
    """(fastconv's outputs unoptimized, optimized, onnxruntime's) for the feeds."""
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    model = fc.from_onnx(proto)
    args = list(feeds.values())
    plain = model(*args)
    opt = fc.optimize(model, tuple(args))
    return plain, opt(*args), sess.run(None, feeds)


def _close(y, ref, share=0.02):
    """Integers at most one step from onnxruntime's, and only a few of them off."""
    assert y.dtype == ref.dtype and y.shape == ref.shape, (y.dtype, y.shape, ref.shape)
    d = np.abs(y.astype(np.int32) - ref.astype(np.int32))
    assert d.max(initial=0) <= 1 and d.mean() <= share, (d.max(), d.mean())


def _grid(rng, dtype):
    """A (scale, zero point) of this type for a tensor."""
    z = int(rng.integers(0, 40)) if dtype == np.uint8 else int(rng.integers(-20, 20))
    return np.float32(rng.uniform(0.01, 0.05)), np.array(z, dtype)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cin=st.sampled_from([3, 4, 8, 16]), cout=st.sampled_from([4, 8, 24]),
       k=st.sampled_from([1, 3, 5]), stride=st.integers(1, 2), dil=st.integers(1, 2),
       pads=st.tuples(*[st.integers(0, 2)] * 4), grouped=st.sampled_from(["one", "two", "dw"]),
       signed_x=st.booleans(), per_channel=st.booleans(), bias=st.booleans(),
       offset_weight=st.booleans(), hw=st.integers(5, 14), seed=st.integers(0, 2 ** 16))
def test_qlinearconv_matches_onnxruntime(cin, cout, k, stride, dil, pads, grouped, signed_x,
                                         per_channel, bias, offset_weight, hw, seed):
    """QLinearConv over strides, dilations, asymmetric pads, groups (one, two, depthwise),
    int8 and uint8 inputs, per-tensor and per-channel weight scales, with and without its
    int32 bias, int8 weights or uint8 ones around a zero point of 128."""
    rng = np.random.default_rng(seed)
    groups = {"one": 1, "two": 2, "dw": cin}[grouped]
    if grouped == "dw":
        cout = cin
    if cin % groups or cout % groups or hw + pads[0] + pads[2] < dil * (k - 1) + 1 \
            or hw + pads[1] + pads[3] < dil * (k - 1) + 1:
        return
    xt = np.int8 if signed_x else np.uint8
    sx, zx = _grid(rng, xt)
    sy, zy = _grid(rng, np.uint8)
    info = np.iinfo(xt)
    x = rng.integers(info.min, info.max + 1, (1, cin, hw, hw)).astype(xt)
    w = rng.integers(-127, 128, (cout, cin // groups, k, k)).astype(np.int8)
    ws = rng.uniform(0.002, 0.01, cout if per_channel else 1).astype(np.float32)
    wz = np.zeros(ws.shape, np.int8)
    if offset_weight:   # uint8 weights around 128: the same integers once moved
        w, wz = (w.astype(np.int32) + 128).astype(np.uint8), np.full(ws.shape, 128, np.uint8)
    if not per_channel:
        ws, wz = ws.reshape(()), wz.reshape(())
    inits = {"xs": sx, "xz": zx, "w": w, "ws": ws, "wz": wz, "ys": sy, "yz": zy}
    ins = ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"]
    if bias:
        inits["b"] = rng.integers(-3000, 3000, cout).astype(np.int32)
        ins.append("b")
    node = helper.make_node("QLinearConv", ins, ["y"], strides=[stride] * 2,
                            dilations=[dil] * 2, pads=list(pads), group=groups,
                            kernel_shape=[k, k])
    proto = _model([node], inits, [("x", xt, list(x.shape))], [("y", np.uint8, None)])
    try:
        sess = ort.InferenceSession(proto.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
    except Exception:   # a type pairing this onnxruntime has no kernel for
        return
    ref = sess.run(None, {"x": x})[0]
    keep = x.copy()
    model = fc.from_onnx(proto)
    assert [n.op for n in model.nodes] == ["qconv"]
    _close(model(x), ref)
    _close(fc.optimize(model, x)(x), ref)
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("zw", [0, 40, 128, 230])
def test_weights_int8_does_not_hold_run_in_parts(rng, zw):
    """uint8 weights whose difference from their zero point int8 does not hold (as some
    converters write them; the ONNX node tests' QLinearConv case is one) run as two or
    three exact int8 products summed: QLinearConv (grouped, per-channel zero points) and
    QLinearMatMul against onnxruntime."""
    x = rng.integers(0, 256, (1, 8, 9, 9)).astype(np.uint8)
    a = rng.integers(0, 256, (2, 24)).astype(np.uint8)
    sx, zx = _grid(rng, np.uint8)
    sy, zy = _grid(rng, np.uint8)
    w = rng.integers(0, 256, (6, 4, 3, 3)).astype(np.uint8)
    b = rng.integers(0, 256, (24, 5)).astype(np.uint8)
    wz = np.array([zw, 255 - zw, zw, 0, 255, zw], np.uint8)
    inits = {"xs": sx, "xz": zx, "w": w, "ws": rng.uniform(0.001, 0.003, 6).astype(np.float32),
             "wz": wz, "ys": sy, "yz": zy, "b": b, "bs": np.float32(0.002),
             "bz": np.uint8(zw), "bias": rng.integers(-900, 900, 6).astype(np.int32)}
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz",
                                              "bias"], ["y"], group=2, pads=[1, 1, 1, 1]),
             helper.make_node("QLinearMatMul", ["a", "xs", "xz", "b", "bs", "bz", "ys", "yz"],
                              ["m"])]
    proto = _model(nodes, inits, [("x", np.uint8, list(x.shape)), ("a", np.uint8, [2, 24])],
                   [("y", np.uint8, None), ("m", np.uint8, None)])
    try:
        ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception:   # (per-channel uint8 weight zero points: an onnxruntime without them)
        nodes[0].input[5] = "bz"
        proto = _model(nodes, inits, [("x", np.uint8, list(x.shape)),
                                      ("a", np.uint8, [2, 24])],
                       [("y", np.uint8, None), ("m", np.uint8, None)])
    model = fc.from_onnx(proto)
    conv, mm = (next(n for n in model.nodes if n.op == op) for op in ("qconv", "qlinear"))
    # (the conv's zero points 0 and 255 always leave a part; b - 128 fits int8)
    assert "weight_q_rest" in conv.params
    assert ("weight_q_rest" in mm.params) == (zw != 128), mm.params.keys()
    plain, opt, ref = _both(proto, {"x": x, "a": a})
    for ys in (plain, opt):
        for y, r in zip(ys, ref):
            _close(y, r)


def test_qlinearmatmul_and_qgemm_match_onnxruntime(rng):
    """QLinearMatMul (per-column weight scales) and QGemm (transB, alpha, int32 bias;
    requantized, and float out without y_scale): each a qlinear node on the integer rows."""
    a = rng.integers(0, 256, (3, 40)).astype(np.uint8)
    sa, za = _grid(rng, np.uint8)
    sy, zy = _grid(rng, np.uint8)
    b = rng.integers(-127, 128, (40, 24)).astype(np.int8)
    bs = rng.uniform(0.002, 0.01, 24).astype(np.float32)
    inits = {"as": sa, "az": za, "b": b, "bs": bs, "bz": np.zeros(24, np.int8), "ys": sy,
             "yz": zy, "bt": np.ascontiguousarray(b.T), "c": rng.integers(-2000, 2000, 24)
             .astype(np.int32), "bs1": np.float32(0.004), "bz1": np.int8(0)}
    nodes = [helper.make_node("QLinearMatMul", ["a", "as", "az", "b", "bs", "bz", "ys", "yz"],
                              ["mm"]),
             helper.make_node("QGemm", ["a", "as", "az", "bt", "bs", "bz", "c", "ys", "yz"],
                              ["gq"], domain="com.microsoft", transB=1, alpha=0.5),
             helper.make_node("QGemm", ["a", "as", "az", "b", "bs1", "bz1", "c"], ["gf"],
                              domain="com.microsoft")]
    proto = _model(nodes, inits, [("a", np.uint8, [3, 40])],
                   [("mm", np.uint8, None), ("gq", np.uint8, None), ("gf", np.float32, None)])
    plain, opt, ref = _both(proto, {"a": a})
    for ys in (plain, opt):
        _close(ys[0], ref[0])
        _close(ys[1], ref[1])
        np.testing.assert_allclose(ys[2], ref[2], rtol=1e-5, atol=1e-4)


def test_qlinear_add_pool_concat_and_max_pool_match_onnxruntime(rng):
    """onnxruntime's QLinearAdd (same shapes, and a per-channel operand broadcast),
    QLinearGlobalAveragePool, QLinearConcat of tensors on different grids, and MaxPool
    on uint8 (pooled in the type)."""
    shape = [1, 8, 9, 9]
    a = rng.integers(0, 256, shape).astype(np.uint8)
    b = rng.integers(0, 256, shape).astype(np.uint8)
    c = rng.integers(0, 256, (1, 8, 1, 1)).astype(np.uint8)
    g = {k: _grid(rng, np.uint8) for k in ("a", "b", "c", "s", "t", "p", "m")}
    inits = {}
    for k, (s, z) in g.items():
        inits[f"{k}s"], inits[f"{k}z"] = s, z
    q = lambda *names: [v for n in names for v in (n, f"{n[0]}s", f"{n[0]}z")]  # noqa: E731
    nodes = [
        helper.make_node("QLinearAdd", q("a", "b") + ["ss", "sz"], ["s"], domain="com.microsoft"),
        helper.make_node("QLinearAdd", q("s", "c") + ["ts", "tz"], ["t"], domain="com.microsoft"),
        helper.make_node("MaxPool", ["t"], ["mp"], kernel_shape=[3, 3], strides=[2, 2],
                         pads=[1, 0, 0, 1]),
        helper.make_node("QLinearGlobalAveragePool", ["t", "ts", "tz", "ps", "pz"], ["p"],
                         domain="com.microsoft"),
        helper.make_node("QLinearConcat", ["ms", "mz"] + q("a", "t"), ["m"], axis=1,
                         domain="com.microsoft"),
    ]
    proto = _model(nodes, inits, [("a", np.uint8, shape), ("b", np.uint8, shape),
                                  ("c", np.uint8, [1, 8, 1, 1])],
                   [(v, np.uint8, None) for v in ("s", "t", "mp", "p", "m")])
    keep = [a.copy(), b.copy(), c.copy()]
    plain, opt, ref = _both(proto, {"a": a, "b": b, "c": c})
    for ys in (plain, opt):
        for y, r in zip(ys, ref):
            _close(y, r)
    for v, v0 in zip((a, b, c), keep):
        np.testing.assert_array_equal(v, v0)


@pytest.mark.parametrize("shape", [(1, 8, 9, 9), (2, 300, 7, 7), (1, 3, 1, 1), (1, 5, 33, 40)])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8])
def test_qlinear_global_average_pool_equals_onnxruntime(rng, shape, dtype):
    """QLinearGlobalAveragePool (fastconv's integer kernel: planes in tasks, the sum exact)
    equals onnxruntime's node bit for bit, on inputs at the type's extremes too."""
    info = np.iinfo(dtype)
    x = rng.integers(info.min, info.max + 1, shape).astype(dtype)
    x[0, 0] = info.max
    x[-1, -1] = info.min
    inits = {}
    for k in ("x", "p"):
        inits[f"{k}s"], inits[f"{k}z"] = _grid(rng, dtype)
    inits["ps"] = np.float32(inits["ps"] / 4)   # a finer output grid: saturates at the ends
    node = helper.make_node("QLinearGlobalAveragePool", ["x", "xs", "xz", "ps", "pz"], ["p"],
                            domain="com.microsoft")
    proto = _model([node], inits, [("x", dtype, list(shape))], [("p", dtype, None)])
    keep = x.copy()
    plain, opt, ref = _both(proto, {"x": x})
    np.testing.assert_array_equal(plain[0] if isinstance(plain, list) else plain, ref[0])
    np.testing.assert_array_equal(opt[0] if isinstance(opt, list) else opt, ref[0])
    np.testing.assert_array_equal(x, keep)


@pytest.mark.parametrize("signed", [False, True])
def test_qlinear_unary_mul_and_average_pool_match_onnxruntime(rng, signed):
    """onnxruntime's QLinearSigmoid and QLinearLeakyRelu (tables of every value the input
    type holds), QLinearMul (a per-channel operand broadcast, as a squeeze-excitation
    block scales) and QLinearAveragePool (asymmetric pads, with and without the padding
    counted, ceil mode), on uint8 and int8 tensors."""
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    shape = [1, 8, 9, 9]
    x = rng.integers(info.min, info.max + 1, shape).astype(dt)
    s = rng.integers(info.min, info.max + 1, (1, 8, 1, 1)).astype(dt)
    inits = {}
    for k in ("x", "s", "g", "l", "m", "p", "q"):
        inits[f"{k}s"], inits[f"{k}z"] = _grid(rng, dt)
    inits["xs"] = np.float32(0.05)   # a range where the sigmoid bends
    nodes = [
        helper.make_node("QLinearSigmoid", ["x", "xs", "xz", "gs", "gz"], ["g"],
                         domain="com.microsoft"),
        helper.make_node("QLinearLeakyRelu", ["x", "xs", "xz", "ls", "lz"], ["l"], alpha=0.2,
                         domain="com.microsoft"),
        helper.make_node("QLinearMul", ["x", "xs", "xz", "s", "ss", "sz", "ms", "mz"], ["m"],
                         domain="com.microsoft"),
        helper.make_node("QLinearAveragePool", ["m", "ms", "mz", "ps", "pz"], ["p"],
                         kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 0, 1],
                         domain="com.microsoft"),
        helper.make_node("QLinearAveragePool", ["x", "xs", "xz", "qs", "qz"], ["q"],
                         kernel_shape=[2, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                         count_include_pad=1, ceil_mode=1, domain="com.microsoft"),
    ]
    proto = _model(nodes, inits, [("x", dt, shape), ("s", dt, [1, 8, 1, 1])],
                   [(v, dt, None) for v in ("g", "l", "m", "p", "q")])
    keep = x.copy()
    plain, opt, ref = _both(proto, {"x": x, "s": s})
    for ys in (plain, opt):
        for y, r in zip(ys, ref):
            _close(y, r)
    np.testing.assert_array_equal(x, keep)


def _quantize_qoperator(rng, tmp_path):
    """A small float CNN (stem, 3x3 and 1x1 convs with relus, a residual add, a max pool, a
    depthwise conv, global pooling, Gemm) quantized by onnxruntime's quantize_static in
    the operator form; its path and calibration batches."""
    c = 16
    inits = {}

    def conv(name, src, cin, cout, k, groups=1, stride=1):
        inits[f"{name}_w"] = (rng.standard_normal((cout, cin // groups, k, k))
                              / np.sqrt(cin // groups * k * k)).astype(np.float32)
        inits[f"{name}_b"] = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        return [helper.make_node("Conv", [src, f"{name}_w", f"{name}_b"], [f"{name}_c"],
                                 pads=[k // 2] * 4, group=groups, strides=[stride] * 2),
                helper.make_node("Relu", [f"{name}_c"], [name])]
    inits["fc_w"] = (rng.standard_normal((10, c)) / 4).astype(np.float32)
    inits["fc_b"] = np.zeros(10, np.float32)
    nodes = (conv("stem", "x", 3, c, 3, stride=2)
             + [helper.make_node("MaxPool", ["stem"], ["pool"], kernel_shape=[3, 3],
                                 strides=[2, 2], pads=[1, 1, 1, 1])]
             + conv("c1", "pool", c, c, 3) + conv("c2", "c1", c, c, 1)
             + [helper.make_node("Add", ["c2", "pool"], ["sum"])]
             + conv("dw", "sum", c, c, 3, groups=c)
             + [helper.make_node("GlobalAveragePool", ["dw"], ["gap"]),
                helper.make_node("Flatten", ["gap"], ["flat"]),
                helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["y"], transB=1)])
    return quantize_static_with_onnxruntime(nodes, inits, (1, 3, 32, 32), tmp_path, rng,
                                            "qoperator")


def test_quantize_static_operator_form_model(rng, tmp_path):
    """A model onnxruntime quantized in the operator form runs on the int8 kernels with
    integer tensors between its layers, onnxruntime's output within a step or two (a step
    off in a layer may carry on to the next), the same before and after fc.optimize, and
    the same after save / load and pickling."""
    qp, calib = _quantize_qoperator(rng, tmp_path)
    proto = onnx.load(str(qp))
    kinds = {n.op_type for n in proto.graph.node}
    assert {"QLinearConv", "QLinearAdd"} <= kinds, kinds
    sess = ort.InferenceSession(str(qp), providers=["CPUExecutionProvider"])
    model = fc.from_onnx(str(qp))
    ops = [n.op for n in model.nodes]
    assert ops.count("qconv") == 4 and "conv" not in ops and "qadd" in ops, ops
    opt = fc.optimize(model, calib[0])
    # the input's QuantizeLinear: the stem quantizes the float image itself
    assert "quantize_linear" in ops and "quantize_linear" not in [n.op for n in opt.nodes]
    dtypes = opt.shapes(calib[0])
    assert all(str(dtypes[n.outputs[0]][1]) == "uint8" for n in opt.nodes
               if n.op in ("qconv", "qadd", "max_pool")), dtypes
    deq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear")
    step = float(next(numpy_helper.to_array(t) for t in proto.graph.initializer
                      if t.name == deq.input[1]))
    path = tmp_path / "q.npz"
    opt.save(path)
    again = [fc.load(path), pickle.loads(pickle.dumps(opt))]
    for x in calib + [rng.standard_normal((1, 3, 32, 32)).astype(np.float32)]:
        keep = x.copy()
        y = opt(x)
        np.testing.assert_array_equal(model(x), y)
        d = np.abs(y.astype(np.float64) - sess.run(None, {"x": x})[0]) / step
        assert d.max() <= 2 + 1e-3 and d.mean() <= 0.2, (d.max(), d.mean())
        for m in again:
            np.testing.assert_array_equal(m(x), y)
        np.testing.assert_array_equal(x, keep)


def test_quantize_static_squeeze_excitation_block(rng, tmp_path):
    """A squeeze-excitation block (conv, LeakyRelu, global pool, 1x1 conv, Sigmoid, Mul,
    AveragePool) quantized by onnxruntime in the operator form: QLinearLeakyRelu,
    QLinearSigmoid, QLinearMul and QLinearAveragePool imported, onnxruntime's output within
    a step."""
    c = 16
    inits = {"w0": (rng.standard_normal((c, 3, 3, 3)) / 5).astype(np.float32),
             "b0": np.zeros(c, np.float32),
             "w1": (rng.standard_normal((c, c, 1, 1)) / 4).astype(np.float32),
             "b1": np.zeros(c, np.float32)}
    nodes = [helper.make_node("Conv", ["x", "w0", "b0"], ["c0"], pads=[1] * 4),
             helper.make_node("LeakyRelu", ["c0"], ["r0"], alpha=0.1),
             helper.make_node("GlobalAveragePool", ["r0"], ["g"]),
             helper.make_node("Conv", ["g", "w1", "b1"], ["c1"]),
             helper.make_node("Sigmoid", ["c1"], ["s"]),
             helper.make_node("Mul", ["r0", "s"], ["m"]),
             helper.make_node("AveragePool", ["m"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1] * 4)]
    qp, calib = quantize_static_with_onnxruntime(nodes, inits, (1, 3, 16, 16), tmp_path, rng,
                                                 "qoperator")
    kinds = {n.op_type for n in onnx.load(str(qp)).graph.node}
    assert {"QLinearSigmoid", "QLinearMul", "QLinearAveragePool"} <= kinds, kinds
    model = fc.optimize(fc.from_onnx(str(qp)), calib[0])
    ops = [n.op for n in model.nodes]
    assert ops.count("qlookup") == 2 and "qmul" in ops and "qavg_pool" in ops, ops
    sess = ort.InferenceSession(str(qp), providers=["CPUExecutionProvider"])
    proto = onnx.load(str(qp))
    deq = next(n for n in proto.graph.node if n.op_type == "DequantizeLinear")
    step = float(next(numpy_helper.to_array(t) for t in proto.graph.initializer
                      if t.name == deq.input[1]))
    for x in calib:
        d = np.abs(model(x).astype(np.float64) - sess.run(None, {"x": x})[0]) / step
        assert d.max() <= 1 + 1e-3 and d.mean() <= 0.05, (d.max(), d.mean())


def test_operator_form_errors_name_the_node():
    """What the int8 kernels cannot run is reported for every node at once: an input
    quantized per channel, int32 weights, an operator of onnxruntime's that is not
    read."""
    inits = {"xs": np.ones(4, np.float32), "xz": np.zeros(4, np.uint8),
             "w": np.full((4, 4, 1, 1), 255, np.int32), "ws": np.float32(0.1),
             "wz": np.uint8(0), "ys": np.float32(0.1), "yz": np.uint8(0),
             "s1": np.float32(0.1), "z1": np.uint8(0)}
    nodes = [helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"],
                              ["a"], name="per_channel_input"),
             helper.make_node("QLinearConv", ["x", "s1", "z1", "w", "ws", "wz", "ys", "yz"],
                              ["b"], name="int32_weights"),
             helper.make_node("QLinearSoftmax", ["x", "s1", "z1", "ys", "yz"], ["c"],
                              name="softmax", domain="com.microsoft")]
    proto = _model(nodes, inits, [("x", np.uint8, [1, 4, 3, 3])],
                   [(v, np.uint8, None) for v in "abc"])
    with pytest.raises(fc.UnsupportedError) as err:
        fc.from_onnx(proto)
    msg = str(err.value)
    assert "3 node(s)" in msg, msg
    assert "'per_channel_input'" in msg and "per tensor (one scale)" in msg, msg
    assert "'int32_weights'" in msg and "must be int8 or uint8" in msg, msg
    assert "'softmax'" in msg and "QLinearSoftmax of domain 'com.microsoft'" in msg, msg
