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


# -- an inverted residual block's expansion + depthwise as one call -----------------------

def _pw_dw_case(rng, n, c, hw, k, r, stride, dilation):
    x = rng.standard_normal((n, c, hw[0], hw[1])).astype(np.float32)
    w1 = (rng.standard_normal((k, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    b1 = rng.standard_normal(k).astype(np.float32)
    w2 = rng.standard_normal((k, 1, r, r)).astype(np.float32)
    b2 = rng.standard_normal(k).astype(np.float32)
    return x, w1, b1, w2, b2


@pytest.mark.parametrize("n, c, hw, k, r, stride, dilation, acts", [
    (1, 16, (28, 28), 96, 3, 2, 1, ("relu6", "relu6")),    # MobileNetV2-like, ragged panel
    (1, 24, (14, 14), 144, 3, 1, 1, ("relu6", "relu6")),
    (3, 24, (9, 11), 48, 5, 1, 1, ("hardswish", None)),   # batch 3, 99 pixels: ragged groups
    (1, 8, (13, 13), 16, 3, 2, 2, (None, "relu")),        # one 16-channel block, dilation
    (2, 1100, (7, 7), 32, 3, 1, 1, ("relu", "relu6")),    # two reduction chunks (> KC_T)
    (1, 5, (16, 15), 80, 3, 3, 1, ("relu", "hardswish")),  # stride 3, 240 pixels
    (1, 5, (6, 5), 80, 3, 3, 1, ("relu", "hardswish")),   # 2x2 output: two calls
    (0, 16, (8, 8), 32, 3, 1, 1, ("relu6", "relu6")),     # batch 0
    (1, 24, (10, 10), 40, 3, 1, 1, ("relu6", "relu6")),   # K not a multiple of 16: two calls
    (1, 16, (3, 3), 32, 3, 1, 1, ("relu6", "relu6")),     # 9-pixel planes: two calls
])
def test_pointwise_depthwise_equals_the_two_convolutions(rng, n, c, hw, k, r, stride, dilation,
                                                         acts):
    from fastconv import functional as F
    from fastconv.kernels import reference as ref
    x, w1, b1, w2, b2 = _pw_dw_case(rng, n, c, hw, k, r, stride, dilation)
    pad = (r // 2) * dilation
    keep = [a.copy() for a in (x, w1, b1, w2, b2)]
    packed = {}
    y = F.pointwise_depthwise(x, w1, b1, acts[0], w2, b2, stride, pad, dilation, acts[1],
                              packed=packed)
    z = fc.conv2d(x, w1, b1, activation=acts[0])
    e = fc.conv2d(z, w2, b2, stride, pad, dilation, k, activation=acts[1])
    assert y.shape == e.shape and rel_err(y, e) < 1e-6
    # the float64 reference, through the activations
    hs = lambda v: v * np.clip(v + 3, 0, 6) / 6  # noqa: E731
    act = lambda v, a: hs(v) if a == "hardswish" else ref.activation(v, a)  # noqa: E731
    if n:
        e64 = act(ref.conv2d(act(ref.conv2d(x, w1, b1), acts[0]), w2, b2, stride, pad, dilation,
                             k), acts[1])
        assert rel_err(y, e64) < 1e-5
    np.testing.assert_array_equal(F.pointwise_depthwise(x, w1, b1, acts[0], w2, b2, stride, pad,
                                                        dilation, acts[1], packed=packed), y)
    for a, b in zip(keep, (x, w1, b1, w2, b2)):
        np.testing.assert_array_equal(a, b)  # the caller's arrays are never modified
    from fastconv import planner
    dw = F.conv_problem((n, k) + hw, w2.shape, stride, pad, dilation, k)
    fused = k % 16 == 0 and n and planner.REGISTRY["depthwise_blocked"].serves(dw) is None
    assert ("pointwise_packed_32" in packed) == bool(fused)


def test_pointwise_depthwise_rejects_mismatched_weights(rng):
    from fastconv import functional as F
    x, w1, b1, w2, b2 = _pw_dw_case(rng, 1, 8, (8, 8), 32, 3, 1, 1)
    with pytest.raises(ValueError, match="blk: weight must be \\(K, C, 1, 1\\)"):
        F.pointwise_depthwise(x, w2, None, None, w2, None, layer="blk")
    with pytest.raises(ValueError, match="blk: dw_weight must be \\(32, 1, R, S\\)"):
        F.pointwise_depthwise(x, w1, None, None, w2[:16], None, layer="blk")
    with pytest.raises(ValueError, match="blk: input must be 4-D"):
        F.pointwise_depthwise(x[0], w1, None, None, w2, None, layer="blk")


def _inverted_residual_graph(rng):
    """expand 1x1 (+BN, relu6) -> depthwise 3x3 (+BN, relu6) -> project 1x1 + x: hand-built."""
    from fastconv.graph import Model, Node
    conv = lambda s, p, g: dict(stride=(s, s), pads=(p, p, p, p), dilation=(1, 1),  # noqa: E731
                                groups=g)
    aff = lambda k: {"scale": rng.uniform(0.5, 1.5, k).astype(np.float32),  # noqa: E731
                     "shift": rng.standard_normal(k).astype(np.float32)}
    w = lambda *s: (0.3 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    nodes = [
        Node("conv", "expand", ["x"], ["a"], conv(1, 0, 1), {"weight": w(96, 16, 1, 1)}),
        Node("affine", "bn1", ["a"], ["b"], {}, aff(96)),
        Node("clip", "r1", ["b"], ["c"], {"min": 0.0, "max": 6.0}),
        Node("conv", "dw", ["c"], ["d"], conv(1, 1, 96), {"weight": w(96, 1, 3, 3)}),
        Node("affine", "bn2", ["d"], ["e"], {}, aff(96)),
        Node("clip", "r2", ["e"], ["f"], {"min": 0.0, "max": 6.0}),
        Node("conv", "project", ["f"], ["g"], conv(1, 0, 1), {"weight": w(16, 96, 1, 1)}),
        Node("add", "res", ["g", "x"], ["y"]),
    ]
    return Model(nodes, ["x"], ["y"], name="block", input_shapes={"x": (None, 16, None, None)})


def test_optimize_fuses_expansion_and_depthwise(rng, tmp_path):
    import importlib
    opt = importlib.import_module("fastconv.optimize")
    x = rng.standard_normal((2, 16, 15, 15)).astype(np.float32)
    graph = _inverted_residual_graph(rng)
    model = fc.optimize(graph, x)
    ops = [n.op for n in model.nodes]
    assert ops == ["pw_dw", "conv"], ops
    orig = opt._Rewriter.fuse_pointwise_depthwise
    try:
        opt._Rewriter.fuse_pointwise_depthwise = lambda self: None
        unfused = fc.optimize(graph, x)
    finally:
        opt._Rewriter.fuse_pointwise_depthwise = orig
    assert [n.op for n in unfused.nodes] == ["conv", "conv", "conv"]
    y = model(x)
    assert rel_err(y, unfused(x)) < 1e-6
    assert rel_err(y, graph(x)) < 1e-5
    assert "pw_dw+bn+relu6+r" in model.explain(x, repeat=1, roof_gflops=100.0)
    path = tmp_path / "block.npz"
    model.save(path)
    np.testing.assert_array_equal(fc.load(path)(x), y)


def test_inverted_residual_runs_expansion_and_depthwise_as_one_call(rng):
    from fastconv.fusion import FusedPointwiseDepthwise
    block = _randomize_bn(models.InvertedResidual(16, 16, 1, 6), rng)  # 16 -> 96 -> 16, + x
    x = rng.standard_normal((2, 16, 14, 14)).astype(np.float32)
    y = block(x)
    steps = block.conv.fused_steps()
    assert isinstance(steps[0], FusedPointwiseDepthwise) and len(steps) == 2
    ref = block.fuse(False)(x)
    block.fuse()
    assert rel_err(y, ref) < 1e-5
    np.testing.assert_allclose(block(x[0]), y[0], rtol=1e-5, atol=1e-5)  # unbatched: step by step
    # new weights: both layers refold, the pair's packed weights are rebuilt
    sd = block.state_dict()
    sd["conv.0.0.weight"] = sd["conv.0.0.weight"] * 0.5
    sd["conv.1.0.weight"] = -sd["conv.1.0.weight"]
    block.load_state_dict(sd)
    y2 = block(x)
    assert rel_err(y2, block.fuse(False)(x)) < 1e-5 and rel_err(y2, y) > 1e-2
    block.fuse()
    # a stride-2 block without the residual, and a block with no expansion
    for inp, oup, s, t in ((16, 24, 2, 6), (32, 16, 1, 1)):
        blk = _randomize_bn(models.InvertedResidual(inp, oup, s, t), rng)
        xb = rng.standard_normal((1, inp, 12, 12)).astype(np.float32)
        yb = blk(xb)
        fused = any(isinstance(st, FusedPointwiseDepthwise) for st in blk.conv.fused_steps())
        assert fused == (t != 1)
        assert rel_err(yb, blk.fuse(False)(xb)) < 1e-5
