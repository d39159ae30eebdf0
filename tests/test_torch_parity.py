"""Parity with torch.nn.functional and torch.nn models (skipped without torch)."""
import numpy as np
import pytest
from conftest import rel_err

import fastconv as fc

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.fixture(autouse=True)
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


CONV_CASES = [  # C, H, W, K, k, stride, padding, dilation, groups
    (3, 17, 15, 8, 3, 1, 1, 1, 1),
    (8, 12, 12, 8, 3, 2, 1, 1, 8),
    (6, 10, 11, 9, 5, 2, 2, 2, 3),
    (16, 7, 7, 32, 1, 1, 0, 1, 1),
    (3, 32, 32, 16, 7, 2, 3, 1, 1),
    (4, 9, 9, 4, 4, 1, "same", 1, 2),
]


@pytest.mark.parametrize("algo", ["direct", "im2col"])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_torch(rng, algo, case):
    c, h, w, k, ks, stride, padding, dilation, groups = case
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, ks, ks)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    expected = F.conv2d(torch.from_numpy(x), torch.from_numpy(wt), torch.from_numpy(b),
                        stride, padding, dilation, groups).numpy()
    y = fc.conv2d(x, wt, b, stride, padding, dilation, groups, algo=algo)
    assert rel_err(y, expected) < 1e-4


def test_torch_tensor_in_torch_tensor_out(rng):
    x = torch.randn(1, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    y = fc.conv2d(x, w, padding=1)
    assert isinstance(y, torch.Tensor)
    assert rel_err(y.numpy(), F.conv2d(x, w.detach(), padding=1).numpy()) < 1e-4


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=(2, 3), stride=(2, 1), dilation=(1, 2))])
def test_max_pool_matches_torch(rng, kw):
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    expected = F.max_pool2d(torch.from_numpy(x), **kw).numpy()
    np.testing.assert_array_equal(fc.max_pool2d(x, **kw), expected)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
                                dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
                                dict(kernel_size=2, divisor_override=3)])
def test_avg_pool_matches_torch(rng, kw):
    x = rng.standard_normal((2, 3, 11, 10)).astype(np.float32)
    expected = F.avg_pool2d(torch.from_numpy(x), **kw).numpy()
    assert rel_err(fc.avg_pool2d(x, **kw), expected) < 1e-5


def _torch_net():
    tnn = torch.nn
    return tnn.Sequential(
        tnn.Conv2d(3, 16, 3, padding=1, bias=False), tnn.BatchNorm2d(16), tnn.ReLU(inplace=True),
        tnn.Conv2d(16, 16, 3, padding=1, groups=16), tnn.BatchNorm2d(16), tnn.ReLU6(),
        tnn.MaxPool2d(2), tnn.Conv2d(16, 24, 1), tnn.Hardswish(),
        tnn.Conv2d(24, 24, 3, stride=2, padding=1, padding_mode="reflect"), tnn.Hardsigmoid(),
        tnn.AvgPool2d(2, ceil_mode=True), tnn.AdaptiveAvgPool2d(1), tnn.Flatten(),
        tnn.Dropout(0.2), tnn.Linear(24, 10), tnn.Sigmoid(), tnn.Identity())


def _fc_net():
    nn = fc.nn
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.MaxPool2d(2), nn.Conv2d(16, 24, 1), nn.Hardswish(),
        nn.Conv2d(24, 24, 3, stride=2, padding=1, padding_mode="reflect"), nn.Hardsigmoid(),
        nn.AvgPool2d(2, ceil_mode=True), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Dropout(0.2), nn.Linear(24, 10), nn.Sigmoid(), nn.Identity())


def test_state_dict_keys_and_shapes_match_torch():
    t, f = _torch_net(), _fc_net()
    tsd, fsd = t.state_dict(), f.state_dict()
    assert list(tsd) == list(fsd)
    for k in tsd:
        assert tuple(tsd[k].shape) == tuple(fsd[k].shape), k


def test_model_from_torch_state_dict_matches(rng):
    torch.manual_seed(0)
    t = _torch_net()
    for m in t.modules():  # non-trivial running statistics
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    t.eval()
    f = _fc_net()
    f.load_state_dict(t.state_dict())          # torch tensors
    x = rng.standard_normal((3, 3, 20, 18)).astype(np.float32)
    with torch.no_grad():
        expected = t(torch.from_numpy(x)).numpy()
    assert rel_err(f(x), expected) < 1e-4
    f2 = _fc_net()
    f2.load_state_dict({k: v.numpy() for k, v in t.state_dict().items()})  # numpy arrays
    assert rel_err(f2(torch.from_numpy(x)).numpy(), expected) < 1e-4


def test_builtin_resnet_matches_torch(rng):
    from fastconv import models
    net = models.resnet_tiny()
    tnet = models.resnet_tiny_torch()
    tnet.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in net.state_dict().items()})
    tnet.eval()
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        expected = tnet(torch.from_numpy(x)).numpy()
    assert rel_err(net(x), expected) < 1e-4


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "resnext50", "mobilenet_v2", "vgg"])
def test_model_zoo_matches_torch(rng, name):
    """Same architecture, same (torchvision-named) weights, same output -- fused or not."""
    from fastconv import models
    net = models.ZOO[name](num_classes=10)
    tnet = models.TORCH_ZOO[name](num_classes=10)
    sd = {k: torch.from_numpy(np.array(v)) for k, v in net.state_dict().items()}
    tnet.load_state_dict(sd)
    tnet.eval()
    assert list(tnet.state_dict()) == list(net.state_dict())
    x = rng.standard_normal((2, 3, 48, 40)).astype(np.float32)
    with torch.no_grad():
        expected = tnet(torch.from_numpy(x)).numpy()
    assert rel_err(net(x), expected) < 1e-4
    assert rel_err(net.fuse(False)(x), expected) < 1e-4
