"""QDQ models (QuantizeLinear -> DequantizeLinear around every int8 tensor, int8 weights
DequantizeLinear'd) on the int8 kernels: fc.optimize's fuse_qdq against the graph as it
reads (fc.from_onnx unoptimized: the float simulation ONNX defines) and onnxruntime."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc
from conftest import quantize_static_with_onnxruntime
from fastconv.graph import Node
from fastconv.kernels.cpu.fakequant import fake_quant, fake_quant_add, quant_add
from fastconv.ops import OPS

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402


def _reference_q(x, s, z, dt):
    """QuantizeLinear, as fastconv's own op for it computes."""
    return OPS["quantize_linear"].fn(Node("quantize_linear", "q", ["x", "s", "z"], ["q"]),
                                     [x, np.float32(s), np.array(z, dt)], None)


def _reference_fq(x, s, z, dt):
    """QuantizeLinear then DequantizeLinear, as fastconv's own ops for them compute."""
    q = _reference_q(x, s, z, dt)
    return OPS["dequantize_linear"].fn(Node("dequantize_linear", "d", ["q", "s", "z"], ["d"]),
                                       [q, np.float32(s), np.array(z, dt)], None)


def _params(s, z, dt, mode=1):
    info = np.iinfo(dt)
    return np.array([s, z, info.min, info.max, mode], np.float32)


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 9000), s=st.floats(1e-3, 2.0), signed=st.booleans(),
       z=st.integers(0, 255), spread=st.floats(0.1, 400.0), seed=st.integers(0, 2 ** 16))
def test_fake_quant_kernels_match_the_onnx_pair(n, s, signed, z, spread, seed):
    """One pass computes exactly what QuantizeLinear and DequantizeLinear compute, values
    past the integer range (saturation) and both integer types included; the fused add
    is the same pairs around a float32 sum, with and without the relu."""
    rng = np.random.default_rng(seed)
    dt = np.int8 if signed else np.uint8
    z = z - 128 if signed else z
    s = np.float32(s)
    x = (rng.standard_normal(n) * spread).astype(np.float32)
    b = (rng.standard_normal(n) * spread).astype(np.float32)
    x[: n // 7] = np.round(x[: n // 7] / s) * s + s / 2   # half-way points
    keep = x.copy()
    y = np.empty_like(x)
    fake_quant(x, y, s, np.float32(z), *[np.float32(v) for v in (np.iinfo(dt).min,
                                                                 np.iinfo(dt).max)])
    np.testing.assert_array_equal(y, _reference_fq(x, s, z, dt))
    np.testing.assert_array_equal(x, keep)
    for relu in (0, 1):
        s2 = np.float32(s * 1.7)
        want = _reference_fq(x, s, z, dt) + _reference_fq(b, s2, 3, np.uint8)
        if relu:
            want = np.maximum(want, np.float32(0))
        want = _reference_fq(want.astype(np.float32), s2, 3, np.uint8)
        fake_quant_add(x, b, y, _params(s, z, dt), _params(s2, 3, np.uint8),
                       _params(s2, 3, np.uint8), relu)
        np.testing.assert_array_equal(y, want)
    off = np.zeros(5, np.float32)
    fake_quant_add(x, b, y, off, off, off, 0)
    np.testing.assert_array_equal(y, x + b)
    # integer operands and sum (the uint8 tensors between a QDQ model's int8 layers): the
    # integers the pairs' QuantizeLinear would give, from both kernels
    qa, qb = _reference_q(x, s, z, dt), _reference_q(b, s2, 3, np.uint8)
    for relu in (0, 1):
        want = _reference_fq(x, s, z, dt) + _reference_fq(b, s2, 3, np.uint8)
        if relu:
            want = np.maximum(want, np.float32(0))
        want = _reference_q(want.astype(np.float32), s2, 3, np.uint8)
        for run in (quant_add, fake_quant_add):
            y8 = np.empty(n, np.uint8)
            run(qa, qb, y8, _params(s, z, dt, 2), _params(s2, 3, np.uint8, 2),
                _params(s2, 3, np.uint8, 2), relu)
            np.testing.assert_array_equal(y8, want)


# -- a QDQ model written by hand ----------------------------------------------------------

def _qdq(nodes, inits, name, s, z, dt=np.uint8):
    """name -> Q -> DQ; returns the DQ output."""
    inits += [numpy_helper.from_array(np.array(s, np.float32), f"{name}_s"),
              numpy_helper.from_array(np.array(z, dt), f"{name}_z")]
    nodes += [helper.make_node("QuantizeLinear", [name, f"{name}_s", f"{name}_z"], [f"{name}_q"]),
              helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"],
                               [f"{name}_dq"])]
    return f"{name}_dq"


def _int8_weight(nodes, inits, name, w, per_channel=True):
    """w quantized symmetric int8 (per output channel, axis 0) -> DequantizeLinear."""
    k = w.shape[0]
    if per_channel:
        s = (np.abs(w).reshape(k, -1).max(1) / 127).astype(np.float32)
        q = np.clip(np.rint(w / s.reshape((k,) + (1,) * (w.ndim - 1))), -127, 127)
    else:
        s = np.float32(np.abs(w).max() / 127)
        q = np.clip(np.rint(w / s), -127, 127)
    inits += [numpy_helper.from_array(q.astype(np.int8), f"{name}_wq"),
              numpy_helper.from_array(np.asarray(s, np.float32), f"{name}_ws"),
              numpy_helper.from_array(np.zeros(np.shape(s), np.int8), f"{name}_wz")]
    nodes.append(helper.make_node("DequantizeLinear", [f"{name}_wq", f"{name}_ws", f"{name}_wz"],
                                  [f"{name}_w"], axis=0))
    return f"{name}_w", s


def _bias(nodes, inits, name, b, sx, sw):
    """b as an int32 initializer at scale sx*sw (QDQ's bias) -> DequantizeLinear."""
    sb = (np.float32(sx) * np.asarray(sw, np.float32)).astype(np.float32)
    inits += [numpy_helper.from_array(np.rint(b / sb).astype(np.int32), f"{name}_bq"),
              numpy_helper.from_array(sb, f"{name}_bs"),
              numpy_helper.from_array(np.zeros(sb.shape, np.int32), f"{name}_bz")]
    nodes.append(helper.make_node("DequantizeLinear", [f"{name}_bq", f"{name}_bs", f"{name}_bz"],
                                  [f"{name}_b"], axis=0))
    return f"{name}_b"


def qdq_resnet_block(rng, c=32, hw=12, classes=64, relu_nodes=False, per_channel=True):
    """x -> conv 3x3 (+relu) -> conv 3x3 -> add(the first conv's output) -> max pool ->
    global pool -> flatten -> gemm, every tensor between them in a QDQ pair: ResNet's
    pattern as onnxruntime's quantize_static writes it (relus absorbed by their uint8
    pair with zero point 0), or with explicit Relu nodes.  Outputs: the logits ("y") and
    the quantized block output ("feat", 32 x 12 x 12 on a grid of step SUM_STEP)."""
    nodes, inits = [], []
    # scales for the ranges these weights give on 2 * N(0, 1) inputs (few values saturate)
    s_in, s1, s2, s3, s_sum, s4, s_out = 0.05, 0.07, 0.04, 0.055, 0.055, 0.11, 0.08
    x = _qdq(nodes, inits, "x", s_in, 128)
    w1 = (rng.standard_normal((c, 3, 3, 3)) * 0.3).astype(np.float32)
    w2 = (rng.standard_normal((c, c, 3, 3)) * 0.06).astype(np.float32)
    w3 = (rng.standard_normal((c, c, 1, 1)) * 0.15).astype(np.float32)
    wf = (rng.standard_normal((classes, c)) * 0.2).astype(np.float32)
    def conv_relu(name, src, w, s_src, s_out):
        # conv 3x3 with an int8 bias, (Relu), its output's pair (zero point 0: the relu)
        wn, ws = _int8_weight(nodes, inits, name, w, per_channel)
        bn = _bias(nodes, inits, name, rng.standard_normal(c).astype(np.float32) * 0.1,
                   s_src, ws)
        nodes.append(helper.make_node("Conv", [src, wn, bn], [name], pads=[1] * 4))
        if relu_nodes:
            nodes.append(helper.make_node("Relu", [name], [name + "r"]))
        return _qdq(nodes, inits, name + "r" if relu_nodes else name, s_out, 0)

    # the stem (3 input channels): int8_conv2d runs it on the float kernels, exactly
    h0 = conv_relu("c0", x, w1, s_in, s1)
    h1 = conv_relu("c1", h0, w2, s1, s2)
    wn, ws = _int8_weight(nodes, inits, "c2", w3, per_channel)
    nodes.append(helper.make_node("Conv", [h1, wn], ["c2"]))
    h2 = _qdq(nodes, inits, "c2", s3, 117)            # signed range, on uint8
    nodes.append(helper.make_node("Add", [h2, h0], ["sum"]))
    if relu_nodes:
        nodes.append(helper.make_node("Relu", ["sum"], ["sumr"]))
    h3 = _qdq(nodes, inits, "sumr" if relu_nodes else "sum", s_sum, 0)
    nodes.append(helper.make_node("MaxPool", [h3], ["mp"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1] * 4))
    h4 = _qdq(nodes, inits, "mp", s_sum, 0)
    wn, ws = _int8_weight(nodes, inits, "c3", w3, per_channel)
    nodes.append(helper.make_node("Conv", [h4, wn], ["c3"]))
    h5 = _qdq(nodes, inits, "c3", s4, -3, np.int8)
    nodes.append(helper.make_node("GlobalAveragePool", [h5], ["gap"]))
    h6 = _qdq(nodes, inits, "gap", s4, -3, np.int8)
    nodes.append(helper.make_node("Flatten", [h6], ["flat"]))
    h7 = _qdq(nodes, inits, "flat", s4, -3, np.int8)
    wn, ws = _int8_weight(nodes, inits, "fc", wf, per_channel)
    bn = _bias(nodes, inits, "fc", rng.standard_normal(classes).astype(np.float32) * 0.1, s4, ws)
    nodes.append(helper.make_node("Gemm", [h7, wn, bn], ["logits"], transB=1))
    y = _qdq(nodes, inits, "logits", s_out, 0, np.int8)
    nodes.append(helper.make_node("Identity", [y], ["y"]))
    nodes.append(helper.make_node("Identity", [h3], ["feat"]))
    graph = helper.make_graph(nodes, "qdq_block", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, [1, 3, hw, hw])], [helper.make_tensor_value_info(
            v, TensorProto.FLOAT, None) for v in ("y", "feat")], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


OUT_STEP, SUM_STEP = 0.08, 0.055   # qdq_resnet_block's output scales


def _steps(y, ref, step):
    """|y - ref| in output quantization steps."""
    return np.abs(np.asarray(y, np.float64) - ref) / step


@pytest.mark.parametrize("relu_nodes", [False, True])
@pytest.mark.parametrize("per_channel", [True, False])
def test_qdq_model_runs_int8_and_matches_the_graph(rng, relu_nodes, per_channel):
    proto = qdq_resnet_block(rng, relu_nodes=relu_nodes, per_channel=per_channel)
    model = fc.from_onnx(proto)
    xs = [rng.standard_normal((1, 3, 12, 12)).astype(np.float32) * 2 for _ in range(4)]
    opt = fc.optimize(model, xs[0])
    ops = [n.op for n in opt.nodes]
    assert ops.count("qconv") == 4 and ops.count("qlinear") == 1 and ops.count("qadd") == 1, ops
    assert "quantize_linear" not in ops and "dequantize_linear" not in ops, ops
    assert "relu" not in ops and "conv" not in ops, ops   # the RGB stem too
    # the tensors only int8 layers read are stored as uint8: the stem's output (the 3x3
    # and the add read it), the 3x3's (the 1x1 reads it) and the 1x1's (the add reads
    # it); the add's sum goes to a float pool
    dtypes = opt.shapes(xs[0])
    qconv_out = [str(dtypes[n.outputs[0]][1]) for n in opt.nodes if n.op == "qconv"]
    assert qconv_out == ["uint8", "uint8", "uint8", "float32"], qconv_out
    qadd = next(n for n in opt.nodes if n.op == "qadd")
    assert qadd.attrs.get("int_a") and qadd.attrs.get("int_b") and \
        not qadd.attrs.get("int_out"), qadd.attrs
    keep = [x.copy() for x in xs]
    for x, x0 in zip(xs, keep):
        ref = model(x)           # the QDQ graph as written, in float
        got = opt(x)
        for y, r, step in zip(got, ref, (OUT_STEP, SUM_STEP)):
            # the int8 kernels sum exactly where the float graph rounds: a value near a
            # rounding boundary may land one step over (and carry on to the logits)
            d = _steps(y, r, step)
            assert d.max() <= 2 + 1e-3 and d.mean() <= 0.05, (d.max(), d.mean())
        np.testing.assert_array_equal(x, x0)
    assert "qadd" in opt.explain() and "int8" in opt.explain()


def test_qdq_model_matches_onnxruntime(rng):
    ort = pytest.importorskip("onnxruntime")
    proto = qdq_resnet_block(rng)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    opt = fc.optimize(fc.from_onnx(proto), np.zeros((1, 3, 12, 12), np.float32))
    for _ in range(4):
        x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32) * 2
        (y, feat), (ry, rfeat) = opt(x), sess.run(None, {"x": x})
        d = _steps(feat, rfeat, SUM_STEP)
        assert d.max() <= 1 + 1e-3 and d.mean() <= 0.05, (d.max(), d.mean())
        # onnxruntime's integer pooling rounds its own way: one pooled channel a step off
        # moves a fifth of the logits by one step
        d = _steps(y, ry, OUT_STEP)
        assert d.max() <= 2 + 1e-3 and d.mean() <= 0.5, (d.max(), d.mean())


def test_quantize_static_model_runs_int8(rng, tmp_path):
    """A float ONNX model quantized by onnxruntime's own tool (QDQ, per channel): every
    conv on the int8 kernels, the result onnxruntime's within a few output steps."""
    ort = pytest.importorskip("onnxruntime")
    nodes, inits = [], {}
    c = 16
    for i, (cin, k) in enumerate(((3, 3), (c, 3), (c, 1))):
        inits[f"w{i}"] = (rng.standard_normal((c, cin, k, k))
                          / np.sqrt(cin * k * k)).astype(np.float32)
        inits[f"b{i}"] = rng.standard_normal(c).astype(np.float32) * 0.1
        src = "x" if i == 0 else f"r{i - 1}"
        nodes += [helper.make_node("Conv", [src, f"w{i}", f"b{i}"], [f"c{i}"],
                                   pads=[k // 2] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
    nodes.append(helper.make_node("Add", ["r2", "r0"], ["y"]))
    qp, calib = quantize_static_with_onnxruntime(nodes, inits, (1, 3, 16, 16), tmp_path, rng)
    sess = ort.InferenceSession(str(qp), providers=["CPUExecutionProvider"])
    opt = fc.optimize(fc.from_onnx(str(qp)), calib[0])
    ops = [n.op for n in opt.nodes]
    assert ops.count("qconv") == 3 and "quantize_linear" not in ops, ops
    ys = onnx.load(str(qp))
    step = next(numpy_helper.to_array(t) for t in ys.graph.initializer
                if t.name.startswith("y_") and t.name.endswith("scale"))
    for x in calib:
        d = _steps(opt(x), sess.run(None, {"x": x})[0], float(step))
        assert d.max() <= 2 + 1e-3 and d.mean() <= 0.05, (d.max(), d.mean())


def test_optimized_qdq_model_saves_loads_and_pickles(rng, tmp_path):
    """The fused nodes (fake_quant, qadd, qconv with uint8 tensors between) survive the
    model file and pickling: the reloaded model computes the same bytes."""
    import pickle
    opt = fc.optimize(fc.from_onnx(qdq_resnet_block(rng)), np.zeros((1, 3, 12, 12), np.float32))
    x = rng.standard_normal((1, 3, 12, 12)).astype(np.float32) * 2
    want = opt(x)
    path = tmp_path / "qdq.npz"
    opt.save(path)
    for again in (fc.load(path), pickle.loads(pickle.dumps(opt))):
        assert [n.op for n in again.nodes] == [n.op for n in opt.nodes]
        for a, b in zip(again(x), want):
            np.testing.assert_array_equal(a, b)
