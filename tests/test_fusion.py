"""Conv -> BN -> activation fusion gives the unfused result, re-folds on new weights."""
import numpy as np
import pytest
from conftest import num_threads, record_calls, rel_err

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


def _matches_torch_and_reloads(model, t, x, path):
    """model(x) equals the torch module t's output within 1e-5, and a save/load round trip
    gives the same result exactly; returns model(x)."""
    import torch
    with torch.no_grad():
        want = t(torch.from_numpy(x)).numpy()
    y = model(x)
    assert rel_err(y, want) < 1e-5
    model.save(path)
    np.testing.assert_array_equal(fc.load(path)(x), y)
    return y


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
    assert kinds == ["Conv2d+BatchNorm2d+relu", "FusedInvertedResidual",  # dw > pw: one call
                     "Conv2d+hardswish", "Conv2d+relu", "MaxPool2d"]


def test_fused_is_one_kernel_call_per_chain(rng, monkeypatch):
    net = _randomize_bn(_net(), rng)
    calls = record_calls(monkeypatch, fc.functional, "conv2d")
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


@pytest.mark.parametrize("block", ["BasicBlock", "Bottleneck"])
def test_resnet_blocks_write_into_reused_buffers(rng, block):
    """The zoo ResNet's own forward runs its fused blocks into per-thread buffers reused
    across calls: results equal the unfused model's, stay the caller's own (a second
    call does not change the first's), for any input shape."""
    m = models.ResNet(getattr(models, block), layers=(2, 1, 1, 1), widths=(8, 16, 16, 24),
                      num_classes=10)
    m = _randomize_bn(m, rng)
    xs = [rng.standard_normal(s).astype(np.float32)
          for s in ((1, 3, 40, 36), (1, 3, 40, 36), (2, 3, 33, 47))]
    ys = [m(x) for x in xs]
    y0 = ys[0].copy()
    m(xs[1])
    np.testing.assert_array_equal(ys[0], y0)
    want = [m.fuse(False)(x) for x in xs]
    for y, w in zip(ys, want):
        assert rel_err(y, w) < 1e-5
    m.fuse(True)
    np.testing.assert_array_equal(m(xs[0]), y0)


def test_resnet_block_residual_fused(rng):
    m = _randomize_bn(models.resnet_tiny(widths=(8, 16, 16, 24), num_classes=10), rng)
    x = rng.standard_normal((2, 3, 40, 36)).astype(np.float32)
    fused = m(x)
    unfused = m.fuse(False)(x)
    assert rel_err(fused, unfused) < 1e-5


# -- an inverted residual block's convolutions as one call ----------------------------------

def _ir_case(rng, n, c, hw, k, k2, r, expand, project):
    kd = k if expand else c
    x = rng.standard_normal((n, c, hw[0], hw[1])).astype(np.float32)
    we = (rng.standard_normal((k, c, 1, 1)) / np.sqrt(c)).astype(np.float32)
    wd = rng.standard_normal((kd, 1, r, r)).astype(np.float32)
    wp = (rng.standard_normal((k2, kd, 1, 1)) / np.sqrt(kd)).astype(np.float32)
    b = lambda m: rng.standard_normal(m).astype(np.float32)  # noqa: E731
    return x, (we, b(k)), (wd, b(kd)), (wp, b(k2)), kd


_IR_CASES = [  # n, c, hw, k, k2, r, stride, dilation, expand, project, residual, acts
    (1, 16, (28, 28), 96, 32, 3, 2, 1, True, True, False, ("relu6", "relu6", None)),
    (1, 24, (14, 14), 144, 64, 3, 1, 1, True, True, True, ("relu6", "relu6", None)),
    (1, 24, (14, 14), 144, 24, 3, 1, 1, True, True, True, ("relu6", "relu6", None)),  # 24 out
    (3, 24, (9, 11), 48, 32, 5, 1, 1, True, True, True, ("hardswish", None, "relu")),  # ragged
    (1, 16, (14, 13), 64, 16, 7, 1, 1, True, True, True, ("relu", None, None)),  # 7x7 taps
    (2, 8, (12, 12), 32, 24, 7, 2, 1, True, True, False, (None, "relu6", None)),  # 7x7/2
    (1, 8, (13, 13), 16, 32, 3, 2, 2, True, True, False, (None, "relu", "relu6")),  # dilation
    (2, 1100, (7, 7), 32, 64, 3, 1, 1, True, True, False, ("relu", "relu6", None)),  # 2 chunks
    (1, 5, (16, 15), 80, 96, 3, 3, 1, True, True, False, ("relu", "hardswish", None)),  # s3
    (1, 32, (20, 20), 0, 64, 3, 1, 1, False, True, True, (None, "relu6", None)),  # no expansion
    (1, 16, (15, 15), 96, 0, 3, 2, 1, True, False, False, ("relu6", "relu6", None)),  # no project
    (1, 16, (15, 15), 96, 0, 3, 1, 1, True, False, True, ("relu6", "relu6", None)),  # dw + res
    (0, 16, (8, 8), 32, 32, 3, 1, 1, True, True, False, ("relu6", "relu6", None)),  # batch 0
    (1, 24, (10, 10), 40, 32, 3, 1, 1, True, True, True, ("relu6", "relu6", None)),  # 40: calls
    (1, 5, (6, 5), 80, 32, 3, 3, 1, True, True, False, ("relu", "relu", None)),  # 2x2 out: calls
    (1, 16, (16, 23), 0, 16, 3, 1, 1, False, True, False, (None, "relu6", None)),  # 16 out
    (2, 6, (11, 9), 48, 40, 3, 2, 1, True, True, False, ("relu6", "relu6", "relu")),  # 32 + 8
    (1, 3, (9, 12), 32, 7, 5, (2, 1), 1, True, True, False, ("relu", None, None)),  # 7 out
    (1, 32, (14, 14), 192, 64, 3, 1, 1, True, True, True, ("relu6", "relu6", None)),  # groups
    (1, 160, (7, 7), 960, 160, 3, 1, 1, True, True, True, ("relu6", "relu6", "relu")),
    (1, 64, (16, 17), 0, 24, 3, 1, 1, False, True, True, (None, "relu6", None)),  # groups
    (1, 16, (12, 12), 48, 56, 3, 1, 1, True, True, False, ("relu6", "relu6", "hardswish")),
    (2, 8, (9, 10), 144, 20, 3, 1, 1, True, True, True, ("relu6", "relu6", None)),  # 17-24 out
]


@pytest.fixture(params=["auto", "rows", "channels"])
def ir_rows(request, monkeypatch):
    """"rows" / "channels": every block with a projection that the blocked kernels serve
    streams by rows (inverted_residual.py), whatever its size, an image split over the
    threads in bands of rows / in groups of 32*k expanded channels where the channels
    allow it (else in bands)."""
    if request.param != "auto":
        from fastconv import _algorithms
        monkeypatch.setattr(_algorithms, "IR_ROWS_MIN_BYTES", 0)
        monkeypatch.setattr(_algorithms, "IR_ROWS_MIN_BAND", 1)
        monkeypatch.setattr(_algorithms, "IR_ROWS_MAX_REDO",
                            float("inf") if request.param == "rows" else -1.0)
    return request.param


@pytest.mark.parametrize("n, c, hw, k, k2, r, stride, dilation, expand, project, residual, acts",
                         _IR_CASES)
def test_inverted_residual_equals_the_separate_convolutions(rng, ir_rows, n, c, hw, k, k2, r,
                                                            stride, dilation, expand, project,
                                                            residual, acts):
    from fastconv import _algorithms, planner
    from fastconv import functional as F
    from fastconv.kernels import reference as ref
    x, (we, be), (wd, bd), (wp, bp), kd = _ir_case(rng, n, c, hw, k, k2, r, expand, project)
    pad = (r // 2) * dilation
    stride = stride if isinstance(stride, tuple) else (stride, stride)
    E = (we, be, acts[0]) if expand else None
    D = (wd, bd, acts[1], stride, pad, dilation)
    P = (wp, bp, acts[2]) if project else None
    z = fc.conv2d(x, we, be, activation=acts[0]) if expand else x
    dprob = F.conv_problem(z.shape, wd.shape, stride, pad, dilation, kd)
    out_c = k2 if project else kd
    res = rng.standard_normal((n, out_c, dprob.oh, dprob.ow)).astype(np.float32) \
        if residual else None
    if project:
        d = fc.conv2d(z, wd, bd, stride, pad, dilation, kd, activation=acts[1])
        e = fc.conv2d(d, wp, bp, activation=acts[2], residual=res)
    else:
        e = fc.conv2d(z, wd, bd, stride, pad, dilation, kd, activation=acts[1], residual=res)
    keep = [np.array(a) for a in (x, we, wd, wp)] + ([res.copy()] if residual else [])
    packed = {}
    y = F.inverted_residual(x, E, D, P, residual=res, packed=packed)
    assert y.shape == e.shape and rel_err(y, e) < 1e-6
    hs = lambda v: v * np.clip(v + 3, 0, 6) / 6  # noqa: E731
    act = lambda v, a: hs(v) if a == "hardswish" else ref.activation(v, a)  # noqa: E731
    if n:  # against float64 step by step
        z64 = act(ref.conv2d(x, we, be), acts[0]) if expand else x
        d64 = ref.conv2d(z64, wd, bd, stride, pad, dilation, kd)
        if project:
            e64 = act(ref.conv2d(act(d64, acts[1]), wp, bp) + (res if residual else 0), acts[2])
        else:
            e64 = act(d64 + (res if residual else 0), acts[1])
        assert rel_err(y, e64) < 1e-5
    np.testing.assert_array_equal(F.inverted_residual(x, E, D, P, residual=res, packed=packed), y)
    for a, b in zip(keep, [x, we, wd, wp] + ([res] if residual else [])):
        np.testing.assert_array_equal(a, b)  # the caller's arrays are never modified
    blocked = kd % 16 == 0 and n and planner.REGISTRY["depthwise_blocked"].serves(dprob) is None
    rows = blocked and project and _algorithms.streams_rows(dprob, expand)
    if ir_rows != "auto":  # every such block, whatever its size
        assert rows == bool(blocked and project and (expand or dprob.w >= 16))
        if rows and n == 1 and fc.get_num_threads() > 1:  # how an image is split
            bands, groups = _algorithms.rows_split(dprob, expand)
            assert (groups > 1) == (ir_rows == "channels" and kd % 64 == 0), (bands, groups)
    kernel = F.inverted_residual_kernel(x.shape, we.shape if expand else None, wd.shape, stride,
                                        pad, dilation, wp.shape if project else None)
    assert kernel.startswith("rows ") == bool(rows), kernel
    weights = packed["inverted_residual:bound"][-1]  # the plan's packed weights
    assert ("expand_32" in weights) == bool(blocked and expand)
    assert ("project_from_blocked" in weights) == bool(
        blocked and project and (k2 % 32 == 0 or rows))


def test_inverted_residual_rejects_mismatched_weights(rng):
    from fastconv import functional as F
    x, (we, be), (wd, bd), (wp, bp), _ = _ir_case(rng, 1, 8, (8, 8), 32, 16, 3, True, True)
    D = (wd, bd, None, 1, 1, 1)
    with pytest.raises(ValueError, match="blk: expand weight must be \\(K, 8, 1, 1\\)"):
        F.inverted_residual(x, (wd, None, None), D, layer="blk")
    with pytest.raises(ValueError, match="blk: depthwise weight must be \\(32, 1, R, S\\)"):
        F.inverted_residual(x, (we, None, None), (wd[:16], None, None, 1, 1, 1), layer="blk")
    with pytest.raises(ValueError, match="blk: project weight must be \\(K2, 32, 1, 1\\)"):
        F.inverted_residual(x, (we, None, None), D, (we, None, None), layer="blk")
    with pytest.raises(ValueError, match="blk: depthwise must be \\(weight, bias, activation"):
        F.inverted_residual(x, (we, None, None), (wd, None), layer="blk")
    with pytest.raises(ValueError, match="blk: input must be 4-D"):
        F.inverted_residual(x[0], (we, None, None), D, layer="blk")
    with pytest.raises(ValueError, match="blk: residual must have the output's shape"):
        F.inverted_residual(x, (we, None, None), D, (wp, None, None), residual=x, layer="blk")


def _inverted_residual_graph(rng, c=16, hidden=96, out=16, r=3):
    """expand 1x1 (+BN, relu6) -> depthwise r x r (+BN, relu6) -> project 1x1 (+ x): by
    hand."""
    from fastconv.graph import Model, Node
    conv = lambda s, p, g: dict(stride=(s, s), pads=(p, p, p, p), dilation=(1, 1),  # noqa: E731
                                groups=g)
    aff = lambda k: {"scale": rng.uniform(0.5, 1.5, k).astype(np.float32),  # noqa: E731
                     "shift": rng.standard_normal(k).astype(np.float32)}
    w = lambda *s: (0.3 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    nodes = [
        Node("conv", "expand", ["x"], ["a"], conv(1, 0, 1), {"weight": w(hidden, c, 1, 1)}),
        Node("affine", "bn1", ["a"], ["b"], {}, aff(hidden)),
        Node("clip", "r1", ["b"], ["c"], {"min": 0.0, "max": 6.0}),
        Node("conv", "dw", ["c"], ["d"], conv(1, r // 2, hidden), {"weight": w(hidden, 1, r, r)}),
        Node("affine", "bn2", ["d"], ["e"], {}, aff(hidden)),
        Node("clip", "r2", ["e"], ["f"], {"min": 0.0, "max": 6.0}),
        Node("conv", "project", ["f"], ["g"], conv(1, 0, 1), {"weight": w(out, hidden, 1, 1)}),
    ]
    outs = "g"
    if out == c:
        nodes.append(Node("add", "res", ["g", "x"], ["y"]))
        outs = "y"
    return Model(nodes, ["x"], [outs], name="block", input_shapes={"x": (None, c, None, None)})


@pytest.mark.parametrize("out, ops, r", [(32, ["inverted_residual"], 3),      # all three
                                         (16, ["inverted_residual"], 3),      # + residual
                                         (16, ["inverted_residual"], 7)])     # 7x7 taps
def test_optimize_fuses_inverted_residual_blocks(rng, tmp_path, out, ops, r):
    import importlib
    opt = importlib.import_module("fastconv.optimize")
    c = out
    x = rng.standard_normal((2, c, 15, 15)).astype(np.float32)
    graph = _inverted_residual_graph(rng, c=c, hidden=96, out=out, r=r)
    model = fc.optimize(graph, x)
    assert [n.op for n in model.nodes] == ops, [n.op for n in model.nodes]
    node = model.nodes[0]
    assert sorted(node.params) == ["dw_bias", "dw_weight", "expand_bias", "expand_weight",
                                   "project_weight"]
    assert node.attrs["expand_activation"] == "relu6" and node.attrs["activation"] == "relu6"
    orig = opt._Rewriter.fuse_inverted_residuals
    try:
        opt._Rewriter.fuse_inverted_residuals = lambda self: None
        unfused = fc.optimize(graph, x)
    finally:
        opt._Rewriter.fuse_inverted_residuals = orig
    assert [n.op for n in unfused.nodes] == ["conv", "conv", "conv"]
    y = model(x)
    assert rel_err(y, unfused(x)) < 1e-6
    assert rel_err(y, graph(x)) < 1e-5
    np.testing.assert_array_equal(model(x), y)
    text = model.explain(x, repeat=1, roof_gflops=100.0)
    assert "expand+dw+project" in text and "inverted_residua" in text
    assert ("blocked pw>dw>" if out == 32 else "blocked pw>dw,") in text
    path = tmp_path / "block.npz"
    model.save(path)
    np.testing.assert_array_equal(fc.load(path)(x), y)
    # new weights in a fused node's params: the node replans, no stale packed weights
    node.params["project_weight"] = node.params["project_weight"] * 2
    y2 = model(x)
    unfused.nodes[-1].params["weight"] = unfused.nodes[-1].params["weight"] * 2
    unfused.nodes[-1].cache.clear()
    assert rel_err(y2, unfused(x)) < 1e-6


def test_optimize_leaves_lone_depthwise_convs_and_gpu_models(rng):
    # a depthwise conv followed by a 1x1 is one node, whatever the 1x1's outputs;
    # a depthwise conv alone stays a conv
    from fastconv.graph import Model, Node
    conv = lambda s, p, g: dict(stride=(s, s), pads=(p, p, p, p), dilation=(1, 1),  # noqa: E731
                                groups=g)
    w = lambda *s: (0.3 * rng.standard_normal(s)).astype(np.float32)  # noqa: E731
    g = Model([Node("conv", "dw", ["x"], ["a"], conv(1, 1, 32), {"weight": w(32, 1, 3, 3)}),
               Node("conv", "pw", ["a"], ["y"], conv(1, 0, 1), {"weight": w(16, 32, 1, 1)})],
              ["x"], ["y"], name="t", input_shapes={"x": (None, 32, None, None)})
    x = rng.standard_normal((1, 32, 12, 12)).astype(np.float32)
    m = fc.optimize(g, x)
    assert [n.op for n in m.nodes] == ["inverted_residual"]
    assert "separate dw,pw" in m.explain(x, repeat=1, roof_gflops=100.0)  # 16 outputs, 12x12
    assert rel_err(m(x), g(x)) < 1e-5
    g.nodes[1].params["weight"] = w(32, 32, 1, 1)  # 32 outputs: read channel-blocked
    m = fc.optimize(g, x)
    assert [n.op for n in m.nodes] == ["inverted_residual"]
    assert "blocked dw>pw" in m.explain(x, repeat=1, roof_gflops=100.0)
    assert rel_err(m(x), g(x)) < 1e-5
    xl = rng.standard_normal((1, 32, 96, 96)).astype(np.float32)  # 1.1 MiB: streamed by rows
    assert "rows dw>pw" in m.explain(xl, repeat=1, roof_gflops=100.0)
    assert rel_err(m(xl), g(xl)) < 1e-5
    lone = Model([g.nodes[0]], ["x"], ["a"], name="t", input_shapes={"x": (None, 32, None, None)})
    assert [n.op for n in fc.optimize(lone, x).nodes] == ["conv"]


def test_inverted_residual_module_runs_as_one_call(rng):
    from fastconv.fusion import FusedInvertedResidual
    block = _randomize_bn(models.InvertedResidual(32, 32, 1, 6), rng)  # 32 -> 192 -> 32, + x
    x = rng.standard_normal((2, 32, 14, 14)).astype(np.float32)
    y = block(x)
    steps = block.conv.fused_steps()
    assert len(steps) == 1 and isinstance(steps[0], FusedInvertedResidual)
    ref = block.fuse(False)(x)
    block.fuse()
    assert rel_err(y, ref) < 1e-5
    np.testing.assert_allclose(block(x[0]), y[0], rtol=1e-5, atol=1e-5)  # unbatched: step by step
    # new weights: every layer refolds, the block's packed weights are rebuilt
    sd = block.state_dict()
    sd["conv.0.0.weight"] = sd["conv.0.0.weight"] * 0.5
    sd["conv.1.0.weight"] = -sd["conv.1.0.weight"]
    sd["conv.2.weight"] = sd["conv.2.weight"] * 3
    block.load_state_dict(sd)
    y2 = block(x)
    assert rel_err(y2, block.fuse(False)(x)) < 1e-5 and rel_err(y2, y) > 1e-2
    block.fuse()
    # a stride-2 block without the residual (24 outputs: the projection runs on its own), a
    # block with no expansion (16 outputs: one call too)
    for inp, oup, s, t, kinds in ((16, 24, 2, 6, ["FusedInvertedResidual"]),
                                  (32, 16, 1, 1, ["FusedInvertedResidual"])):
        blk = _randomize_bn(models.InvertedResidual(inp, oup, s, t), rng)
        xb = rng.standard_normal((1, inp, 12, 12)).astype(np.float32)
        yb = blk(xb)
        assert [type(st).__name__ for st in blk.conv.fused_steps()] == kinds
        assert rel_err(yb, blk.fuse(False)(xb)) < 1e-5


def test_inverted_residual_module_with_7x7_taps(rng):
    """A module block whose depthwise conv is 7x7 (MixNet/ConvNeXt-style) runs as one
    call too, equal to its modules one by one."""
    from fastconv import nn
    from fastconv.fusion import FusedInvertedResidual
    seq = _randomize_bn(nn.Sequential(
        models._conv_bn_act(16, 64, 1), models._conv_bn_act(64, 64, 7, 1, 64),
        nn.Conv2d(64, 24, 1, bias=False), nn.BatchNorm2d(24)), rng)
    x = rng.standard_normal((2, 16, 14, 14)).astype(np.float32)
    y = seq(x)
    assert [type(st).__name__ for st in seq.fused_steps()] == [FusedInvertedResidual.__name__]
    assert rel_err(y, seq.fuse(False)(x)) < 1e-5


def test_inverted_residual_any_geometry(ir_rows):
    """Random blocks (channels, maps, strides, dilations, filters, which parts exist, residual)
    equal the separate conv2d calls (streamed by rows too)."""
    hyp = pytest.importorskip("hypothesis")
    st = hyp.strategies
    from fastconv import functional as F

    @hyp.settings(max_examples=60, deadline=None, derandomize=True)
    @hyp.given(n=st.integers(1, 2), c=st.integers(1, 40), h=st.integers(3, 19),
               w=st.integers(3, 19), k=st.sampled_from([16, 32, 48]),
               k2=st.sampled_from([8, 16, 24, 32, 64]), r=st.sampled_from([3, 5, 7]),
               stride=st.integers(1, 3), dilation=st.integers(1, 2), parts=st.integers(1, 3),
               residual=st.booleans(), seed=st.integers(0, 2 ** 16))
    def check(n, c, h, w, k, k2, r, stride, dilation, parts, residual, seed):
        expand, project = bool(parts & 1), bool(parts & 2)
        rng = np.random.default_rng(seed)
        x, (we, be), (wd, bd), (wp, bp), kd = _ir_case(rng, n, c, (h, w), k, k2, r, expand,
                                                       project)
        pad = (r // 2) * dilation
        z = fc.conv2d(x, we, be, activation="relu6") if expand else x
        d = fc.conv2d(z, wd, bd, stride, pad, dilation, kd, activation="relu6")
        out_c = k2 if project else kd
        res = rng.standard_normal((n, out_c) + d.shape[2:]).astype(np.float32) \
            if residual else None
        if project:
            e = fc.conv2d(d, wp, bp, residual=res)
        else:
            e = fc.conv2d(z, wd, bd, stride, pad, dilation, kd, activation="relu6", residual=res)
        y = F.inverted_residual(x, (we, be, "relu6") if expand else None,
                                (wd, bd, "relu6", stride, pad, dilation),
                                (wp, bp, None) if project else None, residual=res, packed={})
        assert y.shape == e.shape and rel_err(y, e) < 1e-5

    check()


# -- a head conv (a stem) streamed into the first depthwise block ---------------------------

@pytest.mark.parametrize("n, c, hw, k, r1, s1, p1, k2, r, stride, acts", [
    (1, 3, (64, 64), 32, 3, 2, 1, 16, 3, 1, ("relu6", "relu6", None)),   # MobileNetV2's stem
    (2, 3, (37, 41), 32, 3, 2, 1, 24, 3, 1, ("relu", "relu", "relu6")),  # odd maps, 24 out
    (1, 4, (30, 29), 48, 5, (2, 1), (2, 1), 40, 3, 2, ("relu6", None, None)),  # 32 + 8 out
    (1, 1, (20, 20), 16, 7, 1, 3, 8, 5, 1, (None, "hardswish", "relu")),
    (1, 3, (24, 24), 32, 3, 2, 0, 32, 3, 1, ("hardswish", "relu6", None)),  # unpadded
    (1, 3, (33, 32), 64, 3, 2, 1, 24, 3, 1, ("relu6", "relu6", None)),  # channel groups
    (1, 8, (9, 12), 16, 1, 2, 0, 16, 3, 1, ("relu", "relu", None)),  # strided 1x1
])
def test_inverted_residual_head_conv(rng, ir_rows, n, c, hw, k, r1, s1, p1, k2, r, stride,
                                     acts):
    from fastconv import functional as F
    from fastconv.kernels import reference as ref
    x = rng.standard_normal((n, c) + hw).astype(np.float32)
    we = (rng.standard_normal((k, c, r1, r1)) / np.sqrt(c * r1 * r1)).astype(np.float32)
    wd = rng.standard_normal((k, 1, r, r)).astype(np.float32)
    wp = (rng.standard_normal((k2, k, 1, 1)) / np.sqrt(k)).astype(np.float32)
    be, bd, bp = (rng.standard_normal(m).astype(np.float32) for m in (k, k, k2))
    E, D, P = (we, be, acts[0], s1, p1), (wd, bd, acts[1], stride, r // 2, 1), (wp, bp, acts[2])
    z = fc.conv2d(x, we, be, s1, p1, activation=acts[0])
    d = fc.conv2d(z, wd, bd, stride, r // 2, 1, k, activation=acts[1])
    res = rng.standard_normal((n, k2) + d.shape[2:]).astype(np.float32)
    e = fc.conv2d(d, wp, bp, activation=acts[2], residual=res)
    keep = [a.copy() for a in (x, we, wd, wp, res)]
    packed = {}
    y = F.inverted_residual(x, E, D, P, residual=res, packed=packed)
    assert y.shape == e.shape and rel_err(y, e) < 1e-5
    hs = lambda v: v * np.clip(v + 3, 0, 6) / 6  # noqa: E731
    act = lambda v, a: hs(v) if a == "hardswish" else ref.activation(v, a)  # noqa: E731
    z64 = act(ref.conv2d(x, we, be, s1, p1), acts[0])
    d64 = act(ref.conv2d(z64, wd, bd, stride, r // 2, 1, k), acts[1])
    assert rel_err(y, act(ref.conv2d(d64, wp, bp) + res, acts[2])) < 1e-5
    kernel = F.inverted_residual_kernel(x.shape, we.shape, wd.shape, stride, r // 2, 1,
                                        wp.shape, s1, p1)
    assert kernel in ("rows conv>dw>pw", "separate conv,dw,pw"), kernel
    if ir_rows != "auto":
        assert kernel == "rows conv>dw>pw" and "head_rows" in packed[
            "inverted_residual:bound"][-1]
    # the same plan from the second call on (a separate conv2d may pick another kernel
    # once its weights are packed)
    y2 = F.inverted_residual(x, E, D, P, residual=res, packed=packed)
    assert rel_err(y2, y) < 1e-6
    np.testing.assert_array_equal(F.inverted_residual(x, E, D, P, residual=res, packed=packed),
                                  y2)
    for a, b in zip(keep, (x, we, wd, wp, res)):
        np.testing.assert_array_equal(a, b)  # the caller's arrays are never modified


def test_inverted_residual_head_conv_errors(rng):
    from fastconv import functional as F
    x = rng.standard_normal((1, 3, 16, 16)).astype(np.float32)
    wd = np.ones((16, 1, 3, 3), np.float32)
    with pytest.raises(ValueError, match="blk: head conv weight must be \\(K, 3, R, S\\)"):
        F.inverted_residual(x, (np.ones((16, 4, 3, 3), np.float32), None, None, 2, 1),
                            (wd, None, None, 1, 1, 1), layer="blk")
    with pytest.raises(ValueError, match="blk: expand must be \\(weight, bias, activation\\)"):
        F.inverted_residual(x, (np.ones((16, 3, 3, 3), np.float32), None, None, 2),
                            (wd, None, None, 1, 1, 1), layer="blk")


def test_optimize_fuses_a_stem_into_the_first_block(rng, tmp_path):
    """conv 3x3/2 over 3 channels (+BN, relu6) -> depthwise -> 1x1: one node, streamed by
    rows at 112x112; a conv over more than HEAD_MAX_CHANNELS inputs is no head."""
    import torch
    t = torch.nn.Sequential(
        torch.nn.Conv2d(3, 32, 3, 2, 1, bias=False), torch.nn.BatchNorm2d(32), torch.nn.ReLU6(),
        torch.nn.Conv2d(32, 32, 3, 1, 1, groups=32, bias=False), torch.nn.BatchNorm2d(32),
        torch.nn.ReLU6(), torch.nn.Conv2d(32, 16, 1, bias=False), torch.nn.BatchNorm2d(16)).eval()
    with torch.no_grad():
        for m in t.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)
    model = fc.optimize(fc.from_torch(t, x), x)
    assert [n.op for n in model.nodes] == ["inverted_residual"]
    node = model.nodes[0]
    assert node.attrs["expand_stride"] == (2, 2) and node.attrs["expand_pads"] == (1, 1, 1, 1)
    assert "rows conv>dw>pw" in model.explain(x, repeat=1, roof_gflops=100.0)
    _matches_torch_and_reloads(model, t, x, tmp_path / "stem.npz")
    small = rng.standard_normal((2, 3, 20, 20)).astype(np.float32)  # separate calls
    model = fc.optimize(fc.from_torch(t, small), small)
    assert [n.op for n in model.nodes] == ["inverted_residual"]
    assert "separate conv,dw,pw" in model.explain(small, repeat=1, roof_gflops=100.0)
    assert rel_err(model(small), t(torch.from_numpy(small)).detach().numpy()) < 1e-5
    wide = torch.nn.Sequential(torch.nn.Conv2d(9, 32, 3, 2, 1), t[3], t[6]).eval()
    xw = rng.standard_normal((1, 9, 32, 32)).astype(np.float32)
    assert [n.op for n in fc.optimize(fc.from_torch(wide, xw), xw).nodes] == [
        "conv", "inverted_residual"]


def test_mobilenet_v2_stem_runs_with_its_first_block(rng):
    """The zoo's MobileNetV2: its stem and first block (no expansion) as one
    FusedInvertedResidual with a head conv; equal to the unfused model, refolded after
    new weights, step by step while fusion is off."""
    from fastconv.fusion import FusedInvertedResidual, head_block
    m = _randomize_bn(models.MobileNetV2(num_classes=10), rng)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    y = m(x)
    assert isinstance(m._head, FusedInvertedResidual)
    assert m._head.describe() == ("Conv2d+BatchNorm2d+relu6 > Conv2d+BatchNorm2d+relu6 > "
                                  "Conv2d+BatchNorm2d")
    np.testing.assert_array_equal(m(x), y)
    head_parts = m._head._packed[2][0]  # what the block's calls pass as its "expansion"
    assert len(head_parts) == 5 and head_parts[3] == (2, 2)  # the head conv's stride goes along
    assert "_gap_packed" in m.__dict__  # the last 1x1 computed the average pool itself
    # the blocks write into the model's reused buffers: results stay the caller's own (the
    # zoo's weights: an output that follows its input, unlike the randomized BN's above)
    z = models.ZOO["mobilenet_v2"]()
    x2 = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    y1 = z(x)
    y_again, y2 = z(x), z(x2)
    np.testing.assert_array_equal(y_again, y1)
    assert rel_err(y2, z.fuse(False)(x2)) < 1e-5 and rel_err(y2, y1) > 1e-2
    z.fuse(True)
    x3 = rng.standard_normal((2, 3, 48, 40)).astype(np.float32)  # other shapes: other buffers
    assert rel_err(z(x3), z.fuse(False)(x3)) < 1e-5
    z.fuse(True)
    np.testing.assert_array_equal(z(x), y1)
    assert rel_err(y, m.fuse(False)(x)) < 1e-5
    m.fuse(True)
    first = lambda: m.features[1](m.features[0](x))  # noqa: E731  (step by step)
    h = m._head(x)
    assert rel_err(h, first()) < 1e-5
    sd = m.state_dict()
    sd["features.0.0.weight"] = -sd["features.0.0.weight"]
    m.load_state_dict(sd)
    h2 = m._head(x)
    assert rel_err(h2, first()) < 1e-5 and rel_err(h2, h) > 1e-2
    assert rel_err(m(x), m.fuse(False)(x)) < 1e-5
    m.fuse(True)
    # a first block with an expansion or a residual, or a wide first conv: no head block
    assert head_block(m.features[0], m.features[2]) is None  # 16 -> 96 expansion
    wide = models._conv_bn_act(16, 32, 3, 2)
    assert head_block(wide, m.features[1]) is None


# -- a 1x1 conv and the global average pool after it, in one call ----------------------------

@pytest.mark.parametrize("n, c, hw, k, groups, act, residual", [
    (1, 320, (7, 7), 1280, 1, "relu6", False),   # MobileNetV2's last conv
    (2, 64, (7, 7), 256, 1, "relu", True),       # a bottleneck's conv3 with its shortcut
    (1, 24, (13, 11), 40, 1, None, False),       # pixel-vectorized, a plane split in tiles
    (3, 16, (5, 5), 48, 2, "hardswish", True),   # groups
    (0, 16, (5, 5), 32, 1, None, False),         # batch 0
    (1, 320, (2, 2), 1280, 1, "relu6", True),    # a few pixels: rowdot, then the pool
])
def test_conv2d_global_avg_pool(rng, n, c, hw, k, groups, act, residual):
    from fastconv import functional as F
    x = rng.standard_normal((n, c) + hw).astype(np.float32)
    w = (rng.standard_normal((k, c // groups, 1, 1)) / np.sqrt(c)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    res = rng.standard_normal((n, k) + hw).astype(np.float32) if residual else None
    keep = [a.copy() for a in (x, w, b)]
    want = fc.conv2d(x, w, b, groups=groups, activation=act, residual=res).mean(
        axis=(2, 3), keepdims=True)
    packed = {}
    y = F.conv2d_global_avg_pool(x, w, b, act, res, packed, layer="gap")
    assert y.shape == (n, k, 1, 1) and rel_err(y, want) < 1e-5
    np.testing.assert_array_equal(F.conv2d_global_avg_pool(x, w, b, act, res, packed), y)
    out = np.empty((n, k, 1, 1), np.float32)
    assert F.conv2d_global_avg_pool(x, w, b, act, res, packed, out=out) is out
    np.testing.assert_array_equal(out, y)
    for a, a0 in zip((x, w, b), keep):
        np.testing.assert_array_equal(a, a0)
    with pytest.raises(ValueError, match="gap: weight must be \\(K, C/groups, 1, 1\\)"):
        F.conv2d_global_avg_pool(x, np.ones((k, c, 3, 3), np.float32), layer="gap")
    if residual:
        with pytest.raises(ValueError, match="gap: residual must have the convolution's"):
            F.conv2d_global_avg_pool(x, w, b, act, res[:, :, :1], layer="gap")


def test_planned_pooled_conv_and_linear_steps(rng):
    """functional.planned_conv2d_global_avg_pool / planned_linear: the bound calls as
    steps equal to the functions they stand for; None where nothing is bound or the
    arguments are not what the step runs as is, and a step refuses any other input or
    thread count."""
    from fastconv import functional as F
    x = rng.standard_normal((1, 320, 7, 7)).astype(np.float32)
    w = (rng.standard_normal((1280, 320, 1, 1)) / 18).astype(np.float32)
    b = rng.standard_normal(1280).astype(np.float32)
    packed = {}
    assert F.planned_conv2d_global_avg_pool(packed, w, b, x.shape) is None  # nothing bound
    want = F.conv2d_global_avg_pool(x, w, b, "relu6", packed=packed)
    step = F.planned_conv2d_global_avg_pool(packed, w, b, x.shape)
    np.testing.assert_array_equal(step(x), want)
    np.testing.assert_array_equal(step(x.copy()), want)
    assert F.planned_conv2d_global_avg_pool(packed, w.copy(), b, x.shape) is None
    assert F.planned_conv2d_global_avg_pool(packed, w, b, (2, 320, 7, 7)) is None
    for bad in (x.astype(np.float64), np.asfortranarray(x), x[:, :, :6], x.tolist()):
        assert step(bad) is None
    wl = rng.standard_normal((10, 1280)).astype(np.float32)
    bl = rng.standard_normal(10).astype(np.float32)
    v = want.reshape(1, -1)
    lin = F.planned_linear(wl, bl, "relu", v.shape)
    np.testing.assert_array_equal(lin(v), F.linear(v, wl, bl, "relu"))
    np.testing.assert_array_equal(F.planned_linear(wl, None, None, v.shape)(v),
                                  F.linear(v, wl))
    for args in ((wl.astype(np.float64), bl), (wl, bl.astype(np.float64)), (wl[:, :-1], bl),
                 (np.asfortranarray(wl), bl), (wl.tolist(), bl)):
        assert F.planned_linear(*args, None, v.shape) is None
    assert F.planned_linear(wl, bl, None, (F.LINEAR_ROWS_MAX + 1, 1280)) is None
    for bad in (v.astype(np.float64), v[:, :-1], np.vstack([v, v])):
        assert lin(bad) is None
    with num_threads(1 if fc.get_num_threads() > 1 else 2):
        assert step(x) is None and lin(v) is None


def test_optimize_fuses_the_global_pool_into_the_last_conv(rng, tmp_path):
    import importlib
    opt = importlib.import_module("fastconv.optimize")
    t = models.torch_twin("mobilenet_v2")
    # 160x160: a 5x5 map into the pool, where the fused pointwise_packed path runs (at 2x2
    # the planner's rowdot computes the conv and the pool follows it)
    x = rng.standard_normal((1, 3, 160, 160)).astype(np.float32)
    model = fc.optimize(fc.from_torch(t, x), x)
    fused = [n for n in model.nodes if n.attrs.get("global_pool")]
    assert len(fused) == 1 and fused[0].params["weight"].shape == (1280, 320, 1, 1)
    assert "global_avg_pool" not in [n.op for n in model.nodes]
    assert "conv+bn+relu6+av" in model.explain(x, repeat=1, roof_gflops=100.0)  # +avgpool
    y = _matches_torch_and_reloads(model, t, x, tmp_path / "m.npz")
    orig = opt._Rewriter.fuse_global_pool
    try:
        opt._Rewriter.fuse_global_pool = lambda self: None
        plain = fc.optimize(fc.from_torch(t, x), x)
    finally:
        opt._Rewriter.fuse_global_pool = orig
    np.testing.assert_array_equal(plain(x), y)  # the same sums, in the same order
    # quantization, pruning and weight sharing leave the fused conv as it is
    q = fc.quantize(model, [x], quantize_last=True)
    assert [n.op for n in q.nodes if n.attrs.get("global_pool")] == ["conv"]
    assert rel_err(q(x), y) < 0.2
    s = fc.share_weights(model, bits=4)
    assert [n.op for n in s.nodes if n.attrs.get("global_pool")] == ["conv"]


def test_zoo_mobilenet_blocks_take_their_planned_calls(rng, monkeypatch):
    """The zoo MobileNetV2's fused blocks, called into the model's own buffers, go straight
    to their planned calls from the second run on; another thread count or new weights
    take functional.inverted_residual again, and every run equals the unfused model."""
    from fastconv import functional as F
    from fastconv import models
    m = models.mobilenet_v2(num_classes=10)
    x = rng.standard_normal((1, 3, 64, 64)).astype(np.float32)
    y0 = m(x)
    np.testing.assert_array_equal(m(x), y0)
    calls = record_calls(monkeypatch, F, "inverted_residual")
    np.testing.assert_array_equal(m(x), y0)
    assert calls == []
    with num_threads(1):
        np.testing.assert_allclose(m(x), y0, rtol=1e-5, atol=1e-6)
    assert calls  # replanned for one thread
    np.testing.assert_array_equal(m(x), y0)
    n = len(calls)
    np.testing.assert_array_equal(m(x), y0)
    assert len(calls) == n  # planned calls again
    bn = m.features[5].conv[-1]
    bn.weight = bn.weight * 2  # new parameters: the block re-folds and replans
    y2 = m(x)
    m.fuse(False)
    assert rel_err(y2, m(x)) < 1e-4
    assert not np.allclose(y2, y0)


def test_zoo_mobilenet_forward_runs_as_one_plan(rng, monkeypatch):
    """From the second call on, the zoo MobileNetV2's whole forward is its planned calls
    (head, blocks, pooled last 1x1, classifier) with no module walk; any assignment to a
    module (submodule, flag, attribute, weights), train()/fuse(), another thread count or
    input takes the full path once, and every result equals the full path's."""
    from fastconv import models, nn
    m = models.mobilenet_v2(num_classes=10)
    x = rng.standard_normal((1, 3, 224, 224)).astype(np.float32)  # every block planned
    y0 = m(x)
    assert "_plan" not in m.__dict__  # the first call plans the blocks' calls
    np.testing.assert_array_equal(m(x), y0)
    assert "_plan" in m.__dict__
    full = record_calls(monkeypatch, models.MobileNetV2, "_features")

    def planned(model, inp):
        n = len(full)
        out = model(inp)
        return out, len(full) == n

    y, was_planned = planned(m, x)
    assert was_planned
    np.testing.assert_array_equal(y, y0)
    unfused = lambda inp: m.fuse(False)(inp)  # noqa: E731  (then fuse(True) again)
    # a replaced block (a module assigned): the full path, with the new block
    setattr(m.features, "5", models.InvertedResidual(32, 32, 1, 6))
    y1, was_planned = planned(m, x)
    assert not was_planned and not np.allclose(y1, y0)
    assert rel_err(y1, unfused(x)) < 1e-5
    m.fuse(True)
    for change in (lambda: m.eval(), lambda: setattr(m.features[3].conv[0][0], "algo", "auto"),
                   lambda: m.load_state_dict(m.state_dict())):
        m(x), m(x)  # (a fuse() or new weights: the blocks plan their calls again first)
        assert planned(m, x)[1]
        change()
        y2, was_planned = planned(m, x)
        assert not was_planned
        np.testing.assert_array_equal(y2, y1)
    # new weights: replanned with them
    sd = m.state_dict()
    sd["classifier.1.weight"] = -sd["classifier.1.weight"]
    m.load_state_dict(sd)
    y3, was_planned = planned(m, x)
    assert not was_planned
    np.testing.assert_allclose(y3, -y1 + 2 * sd["classifier.1.bias"], rtol=1e-4, atol=1e-5)
    m(x)
    assert planned(m, x)[1]
    # another thread count or input shape: the full path (and a plan for it)
    with num_threads(1 if fc.get_num_threads() > 1 else 2):
        y4, was_planned = planned(m, x)
        assert not was_planned
        np.testing.assert_allclose(y4, y3, rtol=1e-5, atol=1e-6)
    x2 = rng.standard_normal((2, 3, 224, 224)).astype(np.float32)
    y5, was_planned = planned(m, x2)
    assert not was_planned and y5.shape == (2, 10)
    assert rel_err(y5, unfused(x2)) < 1e-5
    m.fuse(True)
    m(x2)
    y6, was_planned = planned(m, x2)
    assert not was_planned  # the blocks planned, the forward's plan made
    np.testing.assert_array_equal(y6, y5)
    y7, was_planned = planned(m, x2)
    assert was_planned
    np.testing.assert_array_equal(y7, y5)
    # the structure counter: every assignment to a module, train() and fuse()
    for op in (lambda: setattr(m.features[2].conv[0], "training", False),
               lambda: m.train(False), lambda: m.features.fuse(True),
               lambda: setattr(m.features, "4", m.features[4])):
        s = nn._structure[0]
        op()
        assert nn._structure[0] > s
