"""Bad input: a ValueError/TypeError that names the layer and says expected vs actual."""
import numpy as np
import pytest

import fastconv as fc


def x4(*shape, dtype=np.float32):
    return np.zeros(shape, dtype)


W = np.zeros((4, 3, 3, 3), np.float32)


@pytest.mark.parametrize("x, kwargs, exc, words", [
    (x4(3, 8), {}, ValueError, ["conv2d", "4-D", "2-D"]),
    (x4(1, 1, 1, 3, 8, 8), {}, ValueError, ["conv2d", "6-D"]),
    (x4(1, 5, 8, 8), {}, ValueError, ["conv2d", "3 channels", "got 5"]),
    (x4(1, 3, 8, 8), {"groups": 2}, ValueError, ["groups=2", "divide"]),
    (x4(1, 3, 2, 2), {}, ValueError, ["larger than the padded input", "2x2"]),
    (x4(1, 3, 8, 8), {"stride": 0}, ValueError, ["stride", ">= 1"]),
    (x4(1, 3, 8, 8), {"stride": -1}, ValueError, ["stride"]),
    (x4(1, 3, 8, 8), {"dilation": 0}, ValueError, ["dilation"]),
    (x4(1, 3, 8, 8), {"padding": -1}, ValueError, ["padding", ">= 0"]),
    (x4(1, 3, 8, 8), {"padding": "full"}, ValueError, ["padding", "'same'"]),
    (x4(1, 3, 8, 8), {"padding": "same", "stride": 2}, ValueError, ["same", "stride"]),
    (x4(1, 3, 8, 8), {"activation": "gelu"}, ValueError, ["activation", "gelu"]),
    (x4(1, 3, 8, 8), {"algo": "fft"}, ValueError, ["algo", "im2col", "fft"]),
    (x4(1, 3, 8, 8, dtype=np.int32), {}, TypeError, ["dtype", "float32", "int32"]),
    (x4(1, 3, 8, 8, dtype=np.float16), {}, TypeError, ["dtype", "float16"]),
    ("not an array", {}, TypeError, ["conv2d", "str"]),
])
def test_conv2d_errors(x, kwargs, exc, words):
    with pytest.raises(exc) as info:
        fc.conv2d(x, W, **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))


def test_weight_and_bias_errors():
    x = x4(1, 3, 8, 8)
    with pytest.raises(ValueError, match="weight must be 4-D"):
        fc.conv2d(x, np.zeros((4, 3, 3), np.float32))
    with pytest.raises(ValueError, match="bias must have 4 elements"):
        fc.conv2d(x, W, np.zeros(5, np.float32))
    with pytest.raises(TypeError, match="weight dtype"):
        fc.conv2d(x, W.astype(np.int8))


def test_module_errors_name_the_layer():
    net = fc.nn.Sequential(fc.nn.Conv2d(3, 8, 3), fc.nn.ReLU(), fc.nn.Conv2d(8, 4, 3))
    with pytest.raises(ValueError) as info:
        net(x4(1, 5, 8, 8))
    assert "0 (Conv2d)" in str(info.value) and "3 channels" in str(info.value)
    net[2].weight = np.zeros((4, 6, 3, 3), np.float32)  # inconsistent on purpose
    with pytest.raises(ValueError) as info:
        net(x4(1, 3, 8, 8))
    assert "2 (Conv2d)" in str(info.value)


def test_constructor_errors():
    with pytest.raises(ValueError, match="in_channels .5. must be divisible by groups .2."):
        fc.nn.Conv2d(5, 4, 3, groups=2)
    with pytest.raises(ValueError, match="stride"):
        fc.nn.Conv2d(4, 4, 3, stride=0)
    with pytest.raises(ValueError, match="padding_mode"):
        fc.nn.Conv2d(4, 4, 3, padding_mode="mirror")
    with pytest.raises(ValueError, match="Linear: in_features"):
        fc.nn.Linear(0, 3)
    with pytest.raises(ValueError, match="return_indices"):
        fc.nn.MaxPool2d(2, return_indices=True)


def test_state_dict_mismatch_errors():
    net = fc.nn.Sequential(fc.nn.Conv2d(3, 8, 3), fc.nn.BatchNorm2d(8))
    sd = dict(net.state_dict())
    bad = dict(sd)
    bad["0.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    with pytest.raises(ValueError) as info:
        net.load_state_dict(bad)
    assert "0.weight" in str(info.value) and "(8, 3, 3, 3)" in str(info.value) \
        and "(8, 3, 5, 5)" in str(info.value)
    missing = {k: v for k, v in sd.items() if k != "1.running_var"}
    missing["2.weight"] = np.zeros(3)
    with pytest.raises(ValueError) as info:
        net.load_state_dict(missing)
    assert "1.running_var" in str(info.value) and "2.weight" in str(info.value)
    # strict=False loads what matches and reports the rest
    miss, unexpected = net.load_state_dict(missing, strict=False)
    assert miss == ["1.running_var"] and unexpected == ["2.weight"]


def test_pool_and_linear_errors():
    with pytest.raises(ValueError, match="max_pool2d: padding must be at most half"):
        fc.max_pool2d(x4(1, 1, 8, 8), 2, padding=2)
    with pytest.raises(ValueError, match="larger than the padded input"):
        fc.avg_pool2d(x4(1, 1, 2, 2), 3)
    with pytest.raises(ValueError, match="linear: expected input with 4 features"):
        fc.linear(x4(2, 5), np.zeros((3, 4), np.float32))
    with pytest.raises(ValueError, match="output_size"):
        fc.adaptive_avg_pool2d(x4(1, 1, 4, 4), 0)


def test_set_num_threads_errors():
    with pytest.raises(ValueError, match="set_num_threads"):
        fc.set_num_threads(0)
    with pytest.raises(TypeError, match="set_num_threads"):
        fc.set_num_threads(1.5)
    with pytest.raises(ValueError, match="cuda"):
        fc.set_backend("cuda")
    with pytest.raises(ValueError, match="set_backend"):
        fc.set_backend("tpu")


def test_batchnorm_errors_name_the_layer():
    bn = fc.nn.BatchNorm2d(4)
    net = fc.nn.Sequential(bn)
    with pytest.raises(ValueError, match=r"0 \(BatchNorm2d\): expected input with 4 channels, got 3"):
        net(x4(1, 3, 5, 5))
    with pytest.raises(ValueError, match=r"batch_norm: mean must have shape \(3,\)"):
        fc.batch_norm(x4(1, 3, 2, 2), np.zeros(4), np.ones(3))
