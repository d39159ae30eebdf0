"""Compressed models on real data: the digits CNN trained by scripts/train_digits.py."""
import digits
import numpy as np
import pytest

import fastconv as fc
from fastconv.compress import format_report

FLOAT_ACC = 98.22  # what the training script measured in torch (docs/performance.md)


@pytest.fixture(scope="module")
def data():
    return digits.load_data()


@pytest.fixture(scope="module")
def float_model(data):
    x_test, _, _ = data
    return fc.optimize(digits.build(digits.state()), x_test[:2])


def test_float_accuracy_matches_training(data, float_model):
    x_test, y_test, _ = data
    acc = digits.accuracy(float_model, x_test, y_test)
    assert abs(acc - FLOAT_ACC) < 0.3
    unfused = digits.accuracy(digits.build(digits.state()), x_test, y_test)
    assert unfused == acc


@pytest.mark.parametrize("method", ["minmax", "percentile", "entropy"])
def test_int8_accuracy_drop_is_within_half_a_point(data, float_model, method):
    x_test, y_test, x_calib = data
    base = digits.accuracy(float_model, x_test, y_test)
    q = fc.quantize(float_model, [x_calib[i:i + 32] for i in range(0, 128, 32)], method=method)
    report = {r["layer"]: r for r in q.quant_report}
    assert [r["layer"] for r in q.quant_report if r["quantized"]] == ["conv2", "conv3", "conv4",
                                                                     "fc1"]
    assert not report["conv1"]["quantized"] and "first" in report["conv1"]["reason"]
    assert not report["fc2"]["quantized"] and "last" in report["fc2"]["reason"]
    assert all(report[k]["x_dtype"] == "uint8" for k in ("conv2", "conv3", "fc1"))  # after ReLU
    assert [n.op for n in q.nodes].count("qconv") == 3
    acc = digits.accuracy(q, x_test, y_test)
    assert base - acc <= 0.5, (method, base, acc, format_report(q.quant_report))


def test_quantize_everything_and_the_accuracy_gate(data, float_model):
    x_test, y_test, x_calib = data
    q = fc.quantize(float_model, x_calib, quantize_first=True, quantize_last=True)
    assert all(r["quantized"] for r in q.quant_report)
    assert [n.op for n in q.nodes].count("qlinear") == 2
    gated = fc.quantize(float_model, x_calib, quantize_first=True, quantize_last=True,
                        eval_fn=lambda m: digits.accuracy(m, x_test, y_test), max_drop=0.0)
    assert gated.quant_gate["met"] and gated.quant_gate["drop"] <= 0.0
    kept = [r for r in gated.quant_report if not r["quantized"]]
    assert all("accuracy gate" in r["reason"] for r in kept)
    text = format_report(gated.quant_report, gated.quant_gate)
    assert "accuracy gate" in text and "met" in text


def test_quantized_model_saves_and_explains(data, float_model, tmp_path):
    x_test, _, x_calib = data
    q = fc.quantize(float_model, x_calib)
    y = q(x_test[:7])
    q.save(tmp_path / "q.npz")
    np.testing.assert_array_equal(fc.load(tmp_path / "q.npz")(x_test[:7]), y)
    text = q.explain(x_test[:1], repeat=1, roof_gflops=100.0)
    assert "qconv" in text and "int8" in text


def test_quantize_errors(data, float_model):
    _, _, x_calib = data
    with pytest.raises(ValueError, match="calibration data is required"):
        fc.quantize(float_model, None)
    with pytest.raises(ValueError, match="is empty"):
        fc.quantize(float_model, [])
    with pytest.raises(ValueError, match=r"calibration batch 1 has shape \(4, 1, 9, 9\)"):
        fc.quantize(float_model, [x_calib[:4], np.zeros((4, 1, 9, 9), np.float32)])
    with pytest.raises(ValueError, match="method must be one of"):
        fc.quantize(float_model, x_calib, method="mse")
    with pytest.raises(ValueError, match="both eval_fn and max_drop"):
        fc.quantize(float_model, x_calib, max_drop=1.0)
    with pytest.raises(TypeError, match="fastconv Model"):
        fc.quantize(object(), x_calib)
    from fastconv.graph import Model, Node
    only_pool = Model([Node("relu", "r", ["x"], ["y"])], ["x"], ["y"])
    with pytest.raises(ValueError, match="nothing to quantize"):
        fc.quantize(only_pool, x_calib)


@pytest.mark.parametrize("bits, max_drop", [(4, 1.0), (8, 0.3)])
def test_codebook_weights_accuracy_and_file_size(data, float_model, tmp_path, bits, max_drop):
    x_test, y_test, _ = data
    base = digits.accuracy(float_model, x_test, y_test)
    shared = fc.share_weights(float_model, bits=bits)
    assert all(r["bits"] == bits for r in shared.share_report)
    for n in shared.nodes:
        if n.op in ("cb_conv", "cb_linear"):
            assert len(np.unique(n.params["codebook"])) <= 2 ** bits
    acc = digits.accuracy(shared, x_test, y_test)
    assert base - acc <= max_drop, (bits, base, acc)
    float_model.save(tmp_path / "f.npz")
    shared.save(tmp_path / "s.npz")
    ratio = (tmp_path / "s.npz").stat().st_size / (tmp_path / "f.npz").stat().st_size
    assert ratio < (0.2 if bits == 4 else 0.35), ratio
    loaded = fc.load(tmp_path / "s.npz")
    np.testing.assert_array_equal(loaded(x_test[:9]), shared(x_test[:9]))
    assert f"{bits}bit" in shared.explain(x_test[:1], repeat=1, roof_gflops=100.0)


def test_replaced_codebook_or_scales_are_used(data, float_model):
    """A node's cached forms follow every parameter they were made from: a codebook
    layer's decoded weight its indices and its codebook, a quantized layer's packed
    int8 weights its weight_q and w_scale; after replacing either, a run equals a fresh
    copy's (pickled: no caches) on the same input, within float rounding."""
    import pickle
    x_test, _, x_calib = data
    x = x_test[:5]
    shared = fc.share_weights(float_model, bits=4)
    q = fc.quantize(float_model, [x_calib[:32]])
    for model, op, key in ((shared, "cb_conv", "codebook"), (q, "qconv", "w_scale")):
        for _ in range(3):   # planned, recorded, replayed
            model(x)
        node = next(n for n in model.nodes if n.op == op)
        node.params[key] = node.params[key] * np.float32(1.5)
        for _ in range(3):
            np.testing.assert_allclose(model(x), pickle.loads(pickle.dumps(model))(x),
                                       rtol=1e-5, atol=1e-5)   # (float layers may bind
            # other kernels in a fresh copy; a stale form is off by the factor 1.5)


def test_codebook_packing_and_kmeans():
    from fastconv.compress import kmeans_1d, pack_indices, unpack_indices
    rng = np.random.default_rng(0)
    idx = rng.integers(0, 16, 101).astype(np.uint8)
    p = pack_indices(idx, 4)
    assert p.size == 51
    np.testing.assert_array_equal(unpack_indices(p, 4, 101), idx)
    v = np.concatenate([np.full(50, -1.0), np.full(30, 0.5), np.full(20, 2.0)])
    cent, lab = kmeans_1d(v, 4)
    np.testing.assert_allclose(np.sort(cent[np.unique(lab)]), [-1.0, 0.5, 2.0], atol=1e-6)


def test_share_weights_errors(float_model):
    with pytest.raises(ValueError, match="bits must be an int in 2..8"):
        fc.share_weights(float_model, bits=1)
    with pytest.raises(ValueError, match="bits must be an int in 2..8"):
        fc.share_weights(float_model, bits=9)
    from fastconv.graph import Model, Node
    with pytest.raises(ValueError, match="no convolution or linear weights"):
        fc.share_weights(Model([Node("relu", "r", ["x"], ["y"])], ["x"], ["y"]))


def test_qconv_node_equals_the_kernel_on_a_quantized_input(data, float_model):
    """The model path quantizes straight into the kernel's layout; same integers as
    quantize_tensor + int8_conv2d."""
    from fastconv.ops import OPS
    x_test, _, x_calib = data
    q = fc.quantize(float_model, x_calib)
    node = next(n for n in q.nodes if n.op == "qconv")
    x = np.abs(np.random.default_rng(0).standard_normal((3,) + (node.params["weight_q"].shape[1],
                                                              8, 8))).astype(np.float32)
    a = node.attrs
    xq, _, _ = fc.quantize_tensor(x, scale=a["x_scale"], zero_point=a["x_zero_point"],
                                  dtype=a["x_dtype"])
    expected = fc.int8_conv2d(xq, a["x_scale"], a["x_zero_point"], node.params["weight_q"],
                              node.params["w_scale"], node.params.get("bias"), a["stride"],
                              a["pads"], a["dilation"], a["groups"], a.get("activation"))
    np.testing.assert_array_equal(OPS["qconv"].fn(node, [x], None), expected)
