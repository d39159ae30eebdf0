"""Compressed models on real data: the digits CNN trained by scripts/train_digits.py."""
import numpy as np
import pytest

import fastconv as fc
import digits
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
