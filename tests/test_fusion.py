"""Conv -> BN -> activation fusion gives the unfused result, re-folds on new weights."""
import numpy as np
import pytest
from conftest import rel_err

import fastconv as fc
from fastconv import fusion, models, nn


def _randomize_bn(model, rng):
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("running_var"):
            sd[k] = rng.uniform(0.5, 2.0, v.shape)
        elif k.endswith("running_mean") or k.endswith("bias"):
            sd[k] = rng.standard_normal(v.shape) * 0.3
        elif k.endswith("num_batches_tracked"):
            sd[k] = v
        elif v.ndim == 1:
            sd[k] = rng.uniform(0.5, 1.5, v.shape)
        else:
            sd[k] = v
    model.load_state_dict(sd)
    return model


def _net():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6(),
        nn.Conv2d(16, 24, 1), nn.BatchNorm2d(24),                       # no activation
        nn.Conv2d(24, 24, 3, stride=2, padding=1, padding_mode="replicate"), nn.Hardswish(),
        nn.Conv2d(24, 8, 1), nn.ReLU(), nn.MaxPool2d(2))


def test_fused_equals_unfused(rng):
    net = _randomize_bn(_net(), rng)
    x = rng.standard_normal((2, 3, 17, 19)).astype(np.float32)
    fused = net(x)
    unfused = net.fuse(False)(x)
    assert rel_err(fused, unfused) < 1e-5
    steps = net.fuse(True).fused_steps()
    kinds = [s.describe() if isinstance(s, fusion.FusedConv) else type(s).__name__ for s in steps]
    assert kinds == ["Conv2d+BatchNorm2d+relu", "Conv2d+BatchNorm2d+relu6", "Conv2d+BatchNorm2d",
                     "Conv2d+hardswish", "Conv2d+relu", "MaxPool2d"]


def test_fused_is_one_kernel_call_per_chain(rng, monkeypatch):
    net = _randomize_bn(_net(), rng)
    calls = []
    real = fc.functional.conv2d
    monkeypatch.setattr(fc.functional, "conv2d", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(nn.BatchNorm2d, "forward", lambda self, x: pytest.fail("BN ran unfused"))
    net(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    assert len(calls) == 5


def test_refolds_after_load_state_dict(rng):
    net = _randomize_bn(_net(), rng)
    x = rng.standard_normal((1, 3, 9, 9)).astype(np.float32)
    before = net(x)
    _randomize_bn(net, np.random.default_rng(99))
    after = net(x)
    assert not np.allclose(before, after)
    assert rel_err(after, net.fuse(False)(x)) < 1e-5
    net.fuse(True)
    net[0].weight = net[0].weight * 2          # attribute assignment also re-folds
    assert rel_err(net(x), net.fuse(False)(x)) < 1e-5


def test_bn_without_running_stats_is_not_folded(rng):
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU())
    steps = net.fused_steps()
    assert isinstance(steps[0], nn.Conv2d) and isinstance(steps[1], nn.BatchNorm2d)
    x = rng.standard_normal((2, 3, 6, 6)).astype(np.float32)
    assert rel_err(net(x), net.fuse(False)(x)) < 1e-6


def test_resnet_block_residual_fused(rng):
    m = _randomize_bn(models.resnet_tiny(widths=(8, 16, 16, 24), num_classes=10), rng)
    x = rng.standard_normal((2, 3, 40, 36)).astype(np.float32)
    fused = m(x)
    unfused = m.fuse(False)(x)
    assert rel_err(fused, unfused) < 1e-5
