"""conv2d: every algorithm against the float64 reference over odd shapes."""
import numpy as np
import pytest
from conftest import rel_err
from fastconv.kernels import reference as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import functional as F
from fastconv import planner

ALGOS = ["direct", "im2col", "im2col_register", "im2col_packed", "implicit_packed",
         "implicit_pixels", "pointwise",
         "pointwise_register", "pointwise_packed", "depthwise", "depthwise_blocked",
         "grouped_blocked", "winograd_f2x2_3x3", "winograd_f4x4_3x3", "rowdot", "patch_packed",
         "dilated_phases", "auto"]


def serves(algo, x_shape, w_shape, stride=1, padding=0, dilation=1, groups=1):
    """Whether algo can run this problem (as given, or with the taps that only read padding
    trimmed: planner.live_taps); if not, conv2d must say so clearly."""
    if algo == "auto":
        return True
    prob = F.conv_problem(x_shape, w_shape, stride, padding, dilation, groups)
    return planner.can_run(algo, prob)

# (N, C, H, W, K, R, S, stride, padding, dilation, groups)
CASES = [
    (1, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1),
    (3, 3, 7, 9, 5, 3, 3, 1, 0, 1, 1),       # H != W, batch 3
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1),       # 1x1 image, C = K = 1
    (2, 17, 5, 5, 17, 1, 1, 1, 0, 1, 1),     # pointwise, channels not a block multiple
    (1, 17, 6, 6, 9, 1, 1, 2, 0, 1, 1),      # strided 1x1
    (1, 4, 11, 13, 6, 3, 3, 2, 1, 1, 2),     # stride 2, groups 2
    (1, 6, 10, 10, 6, 3, 3, 3, (2, 1), 1, 3),  # stride 3, asymmetric padding pair
    (2, 5, 9, 9, 7, 3, 3, 1, 2, 2, 1),       # dilation 2
    (1, 8, 9, 7, 8, 3, 3, 1, 1, 1, 8),       # depthwise (groups = C)
    (1, 4, 9, 7, 8, 5, 5, 2, 2, 1, 4),       # depthwise, multiplier 2, stride 2
    (1, 3, 23, 19, 8, 7, 7, 2, 3, 1, 1),     # stem-like 7x7/2
    (2, 3, 21, 75, 12, 7, 7, 2, 3, 1, 1),    # RGB 7x7/2, rows of 38 = 32 + 6 pixels, K = 8 + 4
    (1, 2, 4, 4, 3, 5, 5, 1, 2, 1, 1),       # kernel > input, padded
    (1, 16, 3, 3, 16, 3, 3, 1, 1, 1, 1),     # K exact multiple of the block
    (1, 3, 1, 12, 2, 1, 3, 1, 0, 1, 1),      # 1-row input, 1x3 kernel
    (2, 6, 12, 12, 4, 2, 3, (1, 2), 0, (2, 1), 2),  # non-square everything
    (1, 64, 14, 14, 35, 3, 3, 1, 1, 1, 1),   # larger channels, K % 4 != 0
    (2, 24, 30, 31, 37, 1, 1, 1, 0, 1, 1),   # 1x1 short reduction, P > one tile, K % 4 == 1
    (1, 6, 5, 5, 10, 1, 1, 1, 0, 1, 2),      # grouped 1x1
    # the micro-kernel's edges: reductions over one 256-step chunk (accumulated in y),
    # row panels of 8 with a partial last one, 32-pixel tiles with a partial last one
    (1, 300, 9, 11, 21, 1, 1, 1, 0, 1, 1),   # Cg = 300 > 256, P = 99 = 3*32 + 3, K = 8+8+5
    (2, 40, 10, 10, 19, 3, 3, 1, 1, 1, 1),   # Cg*R*S = 360: two chunks, P = 100
    (1, 12, 40, 40, 10, 1, 1, 1, 0, 1, 2),   # grouped 1x1, Kg = 5 < 8, P = 1600
    (1, 520, 7, 7, 40, 1, 1, 2, 0, 1, 1),    # strided 1x1, three chunks, 16 pixels
    (1, 8, 12, 16, 64, 1, 1, 1, 0, 1, 1),    # exact: 8 panels, 6 full 32-pixel tiles
    (1, 24, 9, 8, 24, 3, 3, 1, 1, 1, 6),     # grouped 3x3, 4 a group: a partial block
    (2, 64, 6, 7, 64, 3, 3, 2, 1, 1, 2),     # grouped 3x3/2, 32 a group: 4x3 outputs
    (1, 3, 35, 37, 10, 4, 4, 4, 0, 1, 1),    # patchify 4x4/4, ragged right and bottom edges
    (2, 6, 13, 11, 9, 2, 3, (2, 3), (1, 0), 1, 3),  # 2x3/(2,3) windows, padded, grouped
    (1, 6, 14, 13, 8, 3, 3, 1, (2, 1), (3, 2), 2),  # dilation (3, 2): 6 phases, grouped
    (2, 16, 20, 20, 16, 3, 3, 1, 2, 2, 1),   # dilation 2 as DeepLab pads it: 10x10 phases
]


@pytest.mark.parametrize("algo", ALGOS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)).replace(" ", ""))
@pytest.mark.parametrize("activation", [None, "relu"])
def test_conv_matches_reference(rng, algo, case, activation):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    if not serves(algo, x.shape, wt.shape, stride, padding, dilation, groups):
        with pytest.raises(ValueError, match=f"algo='{algo}' cannot run this convolution"):
            fc.conv2d(x, wt, b, stride, padding, dilation, groups, algo=algo)
        return
    y = fc.conv2d(x, wt, b, stride, padding, dilation, groups, activation=activation, algo=algo)
    expected = ref.conv2d(x, wt, b, stride, padding, dilation, groups, activation=activation)
    assert y.shape == expected.shape and y.dtype == np.float32
    assert rel_err(y, expected) < 1e-4


@pytest.mark.parametrize("algo", ["direct", "im2col"])
def test_relu6_and_no_bias(rng, algo):
    x = (4 * rng.standard_normal((2, 5, 8, 8))).astype(np.float32)
    w = rng.standard_normal((6, 5, 3, 3)).astype(np.float32)
    y = fc.conv2d(x, w, None, padding=1, activation="relu6", algo=algo)
    expected = ref.conv2d(x, w, None, padding=1, activation="relu6")
    assert y.min() >= 0 and y.max() <= 6
    assert rel_err(y, expected) < 1e-4


@pytest.mark.parametrize("algo", ["direct", "im2col"])
@pytest.mark.parametrize("padding", ["same", "valid", (0, 1, 2, 1)])
def test_string_and_four_sided_padding(rng, algo, padding):
    x = rng.standard_normal((1, 3, 9, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 4, 3)).astype(np.float32)  # even kernel: 'same' pads unevenly
    y = fc.conv2d(x, w, padding=padding, dilation=1 if padding != "same" else 2, algo=algo)
    if padding == "same":
        assert y.shape[2:] == x.shape[2:]
        expected = ref.conv2d(x, w, padding=(3, 3, 2, 2), dilation=2)
    elif padding == "valid":
        expected = ref.conv2d(x, w)
    else:
        expected = ref.conv2d(x, w, padding=padding)
    assert rel_err(y, expected) < 1e-4


@pytest.mark.parametrize("algo", ["direct", "im2col", "rowdot"])
def test_empty_batch(rng, algo):
    x = np.zeros((0, 3, 8, 8), np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    y = fc.conv2d(x, w, padding=1, algo=algo)
    assert y.shape == (0, 4, 8, 8)


def test_unbatched_input(rng):
    x = rng.standard_normal((3, 6, 6)).astype(np.float32)
    w = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    y = fc.conv2d(x, w)
    assert y.shape == (2, 4, 4)
    assert rel_err(y, ref.conv2d(x[None], w)[0]) < 1e-4


@pytest.mark.parametrize("algo", ["direct", "im2col", "rowdot"])
def test_noncontiguous_readonly_and_float64_inputs_untouched(rng, algo):
    base = rng.standard_normal((2, 6, 10, 12))
    x = base[:, ::2, :, ::-1]                      # float64, non-contiguous view
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w.setflags(write=False)
    x_before, w_before = x.copy(), w.copy()
    y = fc.conv2d(x, w, padding=1, algo=algo)
    assert rel_err(y, ref.conv2d(x, w, padding=1)) < 1e-4
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)


@pytest.mark.parametrize("algo", ["direct", "im2col", "rowdot"])
def test_nan_and_inf_propagate(rng, algo):
    x = rng.standard_normal((1, 2, 6, 6)).astype(np.float32)
    x[0, 0, 2, 2] = np.nan
    x[0, 1, 4, 4] = np.inf
    w = np.abs(rng.standard_normal((3, 2, 3, 3))).astype(np.float32) + 0.1
    y = fc.conv2d(x, w, padding=1, algo=algo, activation="relu")
    expected = ref.conv2d(x, w, padding=1, activation="relu")
    np.testing.assert_array_equal(np.isnan(y), np.isnan(expected))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(expected))
    finite = np.isfinite(expected)
    assert np.allclose(y[finite], expected[finite], rtol=1e-4, atol=1e-4)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 3), groups=st.sampled_from([1, 2, 3, 5]), cpg=st.sampled_from([1, 1, 2, 5]),
       kpg=st.integers(1, 6), h=st.integers(1, 12), w=st.integers(1, 12),
       r=st.sampled_from([1, 1, 2, 3, 3, 5]), s=st.sampled_from([1, 1, 2, 3, 3, 5]), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dh=st.integers(1, 2), dw=st.integers(1, 2), ph=st.integers(0, 3), pw=st.integers(0, 3),
       algo=st.sampled_from(ALGOS), seed=st.integers(0, 2**16))
def test_conv_hypothesis(n, groups, cpg, kpg, h, w, r, s, sh, sw, dh, dw, ph, pw, algo, seed):
    if h + 2 * ph < dh * (r - 1) + 1 or w + 2 * pw < dw * (s - 1) + 1:
        return  # an invalid geometry; the error tests cover it
    rng = np.random.default_rng(seed)
    c, k = cpg * groups, kpg * groups
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, cpg, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    if not serves(algo, x.shape, wt.shape, (sh, sw), (ph, pw), (dh, dw), groups):
        return
    y = fc.conv2d(x, wt, b, (sh, sw), (ph, pw), (dh, dw), groups, algo=algo)
    expected = ref.conv2d(x, wt, b, (sh, sw), (ph, pw), (dh, dw), groups)
    assert y.shape == expected.shape
    assert rel_err(y, expected) < 1e-4


def test_fold_batchnorm_equals_conv_then_bn(rng):
    x = rng.standard_normal((2, 4, 7, 7)).astype(np.float32)
    w = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 6), rng.standard_normal(6)
    mean, var = rng.standard_normal(6), rng.uniform(0.1, 2, 6)
    args = [a.copy() for a in (w, b, gamma, beta, mean, var)]
    w2, b2 = fc.fold_batchnorm(w, b, gamma, beta, mean, var, eps=1e-3)
    for before, after in zip(args, (w, b, gamma, beta, mean, var)):
        np.testing.assert_array_equal(before, after)  # inputs untouched
    y = fc.conv2d(x, w2, b2, padding=1)
    expected = ref.batch_norm(ref.conv2d(x, w, b, padding=1), mean, var, gamma, beta, eps=1e-3)
    assert rel_err(y, expected) < 1e-4


def test_explain_names_the_choice():
    line = fc.explain((1, 64, 56, 56), (64, 64, 3, 3), padding=1)
    assert "im2col" in line and "modelled cost" in line


@pytest.mark.parametrize("algo", ["direct", "im2col", "im2col_register", "im2col_packed",
                                  "implicit_packed", "pointwise", "pointwise_register",
                                  "pointwise_packed", "depthwise", "depthwise_blocked",
                                  "rowdot"])
@pytest.mark.parametrize("activation", [None, "relu", "relu6", "hardswish"])
def test_residual_and_activation_epilogue(rng, algo, activation):
    """y = act(conv(x) + b + residual): the ResNet block tail in one pass."""
    if algo == "depthwise":
        x_shape, w_shape, kw = (2, 6, 9, 8), (12, 1, 3, 3), dict(padding=1, groups=6)
    elif algo == "depthwise_blocked":
        x_shape, w_shape, kw = (2, 12, 9, 8), (12, 1, 3, 3), dict(padding=1, groups=12)
    elif algo == "pointwise":
        x_shape, w_shape, kw = (2, 6, 9, 8), (12, 6, 1, 1), {}
    elif algo in ("pointwise_register", "pointwise_packed"):
        x_shape, w_shape, kw = (2, 6, 9, 8), (12, 3, 1, 1), dict(groups=2)
    elif algo in ("implicit_packed", "rowdot"):
        x_shape, w_shape, kw = (2, 6, 9, 8), (12, 6, 3, 3), dict(padding=1)
    else:
        x_shape, w_shape, kw = (2, 6, 9, 8), (12, 3, 3, 3), dict(padding=1, groups=2)
    x = (3 * rng.standard_normal(x_shape)).astype(np.float32)
    w = rng.standard_normal(w_shape).astype(np.float32)
    b = rng.standard_normal(12).astype(np.float32)
    res = (3 * rng.standard_normal((2, 12, 9, 8))).astype(np.float32)
    res_before = res.copy()
    y = fc.conv2d(x, w, b, activation=activation, algo=algo, residual=res, **kw)
    pre = ref.conv2d(x, w, b, **kw) + res
    if activation == "hardswish":
        expected = pre * np.clip(pre + 3, 0, 6) / 6
    else:
        expected = ref.activation(pre, activation)
    assert rel_err(y, expected) < 1e-4
    np.testing.assert_array_equal(res, res_before)


def test_residual_shape_is_checked(rng):
    x = rng.standard_normal((1, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"residual must have the output's shape \(1, 4, 6, 6\)"):
        fc.conv2d(x, w, residual=np.zeros((1, 4, 8, 8), np.float32))


@pytest.mark.parametrize("case", [
    (1, 32, 56, 56, 1, 3, 1, 1, 1),    # MobileNet 3x3 s1
    (2, 16, 28, 27, 1, 3, 2, 1, 1),    # s2, odd width
    (1, 8, 13, 11, 3, 3, 1, 2, 2),     # multiplier 3, dilation 2
    (1, 12, 15, 15, 1, 5, 2, 2, 1),    # 5x5 s2
    (3, 5, 7, 9, 2, 5, 1, 2, 1),       # 5x5, multiplier 2, batch 3
    (1, 4, 1, 1, 1, 3, 1, 1, 1),       # 1x1 image
    (1, 7, 6, 6, 1, 7, 1, 3, 1),       # 7x7 (generic taps)
    (2, 5, 9, 10, 1, 3, 2, 0, 1),      # 3x3/2, even padding 0, even width
    (1, 5, 10, 9, 1, 3, 2, 2, 1),      # 3x3/2, even padding 2, odd width
    (1, 6, 11, 11, 2, 3, 2, 3, 1),     # 3x3/2, odd padding 3, multiplier 2
])
def test_depthwise_shapes(rng, case):
    n, c, h, w, mult, k, stride, pad, dil = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c * mult, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c * mult).astype(np.float32)
    y = fc.conv2d(x, wt, b, stride, pad, dil, groups=c, activation="relu6", algo="depthwise")
    assert rel_err(y, ref.conv2d(x, wt, b, stride, pad, dil, c, activation="relu6")) < 1e-4


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([0, 1, 3]), c=st.integers(1, 40), h=st.integers(1, 20),
       w=st.integers(1, 20), k=st.sampled_from([3, 5, 7]), stride=st.integers(1, 3),
       pads=st.tuples(*[st.integers(0, 3)] * 4), dil=st.integers(1, 2),
       activation=st.sampled_from([None, "relu", "relu6", "hardswish"]), with_res=st.booleans(),
       band=st.sampled_from([1, 16, 40, 2048]))
def test_depthwise_blocked_shapes(rng, monkeypatch, n, c, h, w, k, stride, pads, dil, activation,
                                  with_res, band):
    """16-channel blocks: channel tails (C % 16), planes of exactly 16 pixels and the
    overlapping last pixel group, asymmetric padding, dilation, strides, 3x3, 5x5 and 7x7;
    row bands of one row up to the whole plane, short last bands whose pixel groups
    reach back into the previous band (with a residual too)."""
    from fastconv import _algorithms
    monkeypatch.setattr(_algorithms, "DEPTHWISE_BAND_PIXELS", band)
    x = (3 * rng.standard_normal((n, c, h, w))).astype(np.float32)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    if min(h + pads[0] + pads[1], w + pads[2] + pads[3]) < dil * (k - 1) + 1:
        return
    pre = ref.conv2d(x, wt, b, stride, pads, dil, c)
    res = (3 * rng.standard_normal(pre.shape)).astype(np.float32) if with_res else None
    if not serves("depthwise_blocked", x.shape, wt.shape, stride, pads, dil, c):
        assert h * w < 16 or pre.shape[2] * pre.shape[3] < 16
        return
    x_before = x.copy()
    y = fc.conv2d(x, wt, b, stride, pads, dil, c, activation=activation, residual=res,
                  algo="depthwise_blocked")
    expected = _with_epilogue(pre, res, activation)
    assert y.shape == expected.shape
    assert rel_err(y, expected) < 1e-4
    np.testing.assert_array_equal(x, x_before)


def _with_epilogue(pre, res, activation):
    """The reference output of a fused epilogue: activation(pre + res)."""
    pre = pre + (0 if res is None else res)
    if activation == "hardswish":
        return pre * np.clip(pre + 3, 0, 6) / 6
    return ref.activation(pre, activation)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.sampled_from([0, 1, 2]), cg=st.sampled_from([2, 4, 8, 16, 32, 64]),
       groups=st.integers(2, 5), h=st.integers(1, 18), w=st.integers(1, 18),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       pads=st.tuples(*[st.integers(0, 2)] * 4),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       activation=st.sampled_from([None, "relu", "relu6", "hardswish"]), with_res=st.booleans(),
       bias=st.booleans(), band=st.sampled_from([1, 16, 2048]),
       algo=st.sampled_from(["grouped_blocked", "implicit_pixels"]))
def test_grouped_3x3_shapes(rng, monkeypatch, n, cg, groups, h, w, stride, pads, dil, activation,
                            with_res, bias, band, algo):
    """Grouped 3x3 convs of 2-64 channels a group on the families built for them: the
    rotated copies (2, 4, 8 a group; a partial last 16-channel block when C % 16 != 0),
    whole-block broadcasts (16, 32, 64 a group; rows shorter and longer than a step),
    every stride and dilation, asymmetric padding, epilogues, row bands; the caller's
    arrays unchanged."""
    from fastconv import _algorithms
    monkeypatch.setattr(_algorithms, "DEPTHWISE_BAND_PIXELS", band)
    c = cg * groups
    if min(h + pads[0] + pads[1], w + pads[2] + pads[3]) < 2 * max(dil) + 1:
        return
    x = (3 * rng.standard_normal((n, c, h, w))).astype(np.float32)
    wt = rng.standard_normal((c, cg, 3, 3)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32) if bias else None
    pre = ref.conv2d(x, wt, b, stride, pads, dil, groups)
    res = (3 * rng.standard_normal(pre.shape)).astype(np.float32) if with_res else None
    if not serves(algo, x.shape, wt.shape, stride, pads, dil, groups):
        assert algo == "grouped_blocked" and (h * w < 16 or pre.shape[2] * pre.shape[3] < 16)
        return
    before = [a.copy() for a in (x, wt, res) if a is not None]
    y = fc.conv2d(x, wt, b, stride, pads, dil, groups, activation=activation, residual=res,
                  algo=algo)
    expected = _with_epilogue(pre, res, activation)
    assert y.shape == expected.shape
    assert rel_err(y, expected) < 1e-4
    for a, a0 in zip([a for a in (x, wt, res) if a is not None], before):
        np.testing.assert_array_equal(a, a0)


def test_grouped_blocked_serves_what_it_says():
    """groups of 2-64 channels in and out, 3x3, planes of 16 pixels or more; otherwise a
    clear reason."""
    prob = F.conv_problem((1, 64, 8, 8), (64, 8, 3, 3), 1, 1, 1, 8)
    assert planner.can_run("grouped_blocked", prob)
    for x_shape, w_shape, groups, why in [
            ((1, 64, 8, 8), (64, 64, 3, 3), 1, "groups of 2, 4, 8, 16, 32 or 64"),
            ((1, 256, 8, 8), (256, 128, 3, 3), 2, "got groups=2 of 128 in"),
            ((1, 48, 8, 8), (48, 12, 3, 3), 4, "got groups=4 of 12 in"),
            ((1, 32, 8, 8), (64, 8, 3, 3), 4, "16 out"),
            ((1, 64, 8, 8), (64, 1, 3, 3), 64, "groups of 2, 4, 8, 16, 32 or 64"),
            ((1, 64, 8, 8), (64, 8, 5, 5), 8, "3x3 filter"),
            ((1, 64, 3, 5), (64, 8, 3, 3), 8, ">= 16 pixels")]:
        prob = F.conv_problem(x_shape, w_shape, 1, 1, 1, groups)
        assert why in planner.REGISTRY["grouped_blocked"].serves(prob)
        with pytest.raises(ValueError, match="grouped_blocked"):
            fc.conv2d(np.zeros(x_shape, np.float32), np.zeros(w_shape, np.float32),
                      padding=1, groups=groups, algo="grouped_blocked")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(algo=st.sampled_from(["im2col", "im2col_register", "im2col_packed", "implicit_packed"]),
       c=st.integers(1, 5), h=st.integers(1, 17), w=st.integers(1, 17), k=st.integers(1, 9),
       r=st.integers(1, 7), s=st.integers(1, 7), sh=st.integers(1, 3), sw=st.integers(2, 4),
       pads=st.tuples(*[st.integers(0, 4)] * 4), dil=st.integers(1, 2))
def test_strided_im2col_phases(rng, algo, c, h, w, k, r, s, sh, sw, pads, dil):
    """Column strides > 1 read the input split into column phases: every stride,
    padding parity, dilation and filter width against the reference."""
    if h + pads[0] + pads[1] < dil * (r - 1) + 1 or w + pads[2] + pads[3] < dil * (s - 1) + 1:
        return
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, r, s)).astype(np.float32)
    x_before = x.copy()
    y = fc.conv2d(x, wt, None, (sh, sw), pads, dil, algo=algo)
    assert rel_err(y, ref.conv2d(x, wt, None, (sh, sw), pads, dil)) < 1e-4
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("case", [
    # (N, C, H, W, K, R, S, stride, pads, dilation)
    (2, 1100, 7, 7, 70, 3, 3, 1, (1, 1, 1, 1), 1),    # two channel chunks, ragged panel
    (1, 40, 9, 10, 33, 3, 3, 1, (1, 1, 1, 1), 1),     # rows of 10: a 3-pixel edge group
    (1, 24, 15, 13, 64, 3, 3, 2, (1, 0, 1, 0), 1),    # stride 2, asymmetric padding
    (3, 16, 12, 12, 40, 5, 5, 1, (2, 2, 2, 2), 2),    # 5x5, dilation 2, batch 3
    (1, 8, 11, 11, 96, 1, 1, 1, (0, 0, 0, 0), 1),     # 1x1, no padding: x read in place
    (1, 20, 9, 23, 8, 3, 7, (2, 3), (1, 2, 3, 0), 1),  # column stride 3, K < 32
    (1, 16, 5, 5, 20, 3, 3, 1, (3, 3, 1, 1), 1),      # output rows reading padding only
    (1, 16, 10, 9, 32, 3, 3, 2, (2, 1, 1, 1), 2),     # rows skipped under stride, dilation
    (2, 24, 3, 8, 40, 5, 3, 1, (4, 2, 1, 1), 1),      # every row skips some kernel rows
    (1, 32, 14, 14, 64, 5, 5, 1, (2, 2, 2, 2), 1),    # two row-end pixels read padding only
    (1, 16, 13, 13, 32, 3, 3, 2, (1, 1, 1, 1), 1),    # stride 2: the last pixel at tap s=2
])
@pytest.mark.parametrize("act, residual", [(None, False), ("relu6", True), ("hardswish", False)])
def test_implicit_packed(rng, case, act, residual):
    """The implicit GEMM (taps straight off the padded input, no column matrix)
    against the float64 reference: channel chunks, ragged panels and pixel groups,
    strides, dilation, the fused residual and activation; its packed weights cached."""
    n, c, h, w, k, r, s, stride, pads, dil = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, r, s)) / np.sqrt(c * r * s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    packed = {}
    e = ref.conv2d(x.astype(np.float64), wt.astype(np.float64), b.astype(np.float64), stride,
                   pads, dil)
    res = rng.standard_normal(e.shape).astype(np.float32) if residual else None
    if res is not None:
        e = e + res
    e = {None: e, "relu6": np.clip(e, 0, 6), "hardswish": e * np.clip(e + 3, 0, 6) / 6}[act]
    before = x.copy()
    for _ in range(2):  # the second call takes the layer's bound fast path
        y = fc.conv2d(x, wt, b, stride, pads, dil, activation=act, residual=res,
                      algo="implicit_packed", packed=packed)
        assert rel_err(y, e) < 1e-5
    assert "implicit_packed" in packed
    np.testing.assert_array_equal(x, before)


@settings(max_examples=300, deadline=None)
@given(p=st.integers(0, 30), sh=st.integers(1, 3), dh=st.integers(1, 3), pt=st.integers(0, 8),
       h=st.integers(1, 12), r=st.integers(1, 7))
def test_live_rows_are_the_rows_reading_input(p, sh, dh, pt, h, r):
    """implicit_packed's per-row tap range: exactly the kernel rows that read a real
    input row, or all of them where none does."""
    from fastconv.kernels.cpu.im2col import live_rows
    rows = [q for q in range(r) if 0 <= p * sh - pt + q * dh < h]
    expect = (rows[0], rows[-1] + 1) if rows else (0, r)
    assert tuple(live_rows(p, sh, dh, pt, h, r)) == expect


@pytest.mark.parametrize("k, ow", [(3, 7), (3, 14), (3, 21), (7, 5), (7, 7), (7, 10),
                                   (7, 14), (7, 16)])
@pytest.mark.parametrize("activation", [None, "relu6", "hardswish"])
def test_depthwise_blocked_rows_of_seven(rng, k, ow, activation):
    """3x3 stride-1 rows 7, 14 and 21 pixels wide take seven pixels a step (AVX-512), as do
    7x7 rows of at least 7 (a last step reaching back on 10 and 16, one pixel a step on 5):
    equal to the reference, with a residual and a channel tail."""
    c = 40  # two whole blocks and a tail
    x = rng.standard_normal((2, c, 9, ow)).astype(np.float32)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    res = rng.standard_normal((2, c, 9, ow)).astype(np.float32)
    pre = ref.conv2d(x, wt, b, 1, k // 2, 1, c) + res
    expected = (pre * np.clip(pre + 3, 0, 6) / 6 if activation == "hardswish"
                else ref.activation(pre, activation))
    y = fc.conv2d(x, wt, b, 1, k // 2, 1, c, activation=activation, residual=res,
                  algo="depthwise_blocked")
    assert rel_err(y, expected) < 1e-4


@pytest.mark.parametrize("activation", ["relu", "relu6", "hardswish"])
def test_depthwise_blocked_nan_passes_through(activation):
    """NaN stays NaN through the fused activation (as in PyTorch), only where it reaches."""
    x = np.ones((1, 20, 6, 6), np.float32)
    x[0, 17, 2, 3] = np.nan
    w = np.full((20, 1, 3, 3), 0.5, np.float32)
    y = fc.conv2d(x, w, None, padding=1, groups=20, activation=activation,
                  algo="depthwise_blocked")
    bad = np.isnan(y)
    assert bad[0, 17, 1:4, 2:5].all() and bad.sum() == 9


WINOGRAD_BOUND = {"winograd_f2x2_3x3": 1e-5, "winograd_f4x4_3x3": 5e-5}


@pytest.mark.parametrize("algo", list(WINOGRAD_BOUND))
@pytest.mark.parametrize("channels", [1, 16, 256, 1024])
@pytest.mark.parametrize("dist", ["normal", "wide"])
def test_winograd_error_bound(algo, channels, dist):
    """The documented bound: max|err| / max|y| under 1e-5 (F2) and 5e-5 (F4) for Cg <= 2048."""
    rng = np.random.default_rng(channels)
    x = rng.standard_normal((1, channels, 13, 11))
    if dist == "wide":  # eight orders of magnitude across the input
        x = x * np.exp(rng.uniform(-4, 4, x.shape))
    x = x.astype(np.float32)
    w = rng.standard_normal((5, channels, 3, 3)).astype(np.float32)
    y = fc.conv2d(x, w, None, 1, 1, algo=algo)
    e = ref.conv2d(x, w, None, 1, 1)
    assert np.abs(y - e).max() / np.abs(e).max() < WINOGRAD_BOUND[algo]


@pytest.mark.parametrize("algo", list(WINOGRAD_BOUND))
@pytest.mark.parametrize("case", [
    (1, 3, 1, 1, 2, 1, 1),      # 1x1 image, padded
    (3, 4, 9, 10, 7, 1, 1),     # edge tiles on both sides, batch 3
    (2, 6, 6, 5, 4, 0, 2),      # unpadded, grouped
    (1, 8, 17, 13, 9, (2, 0), 4),  # asymmetric padding pair, groups 4
    (0, 3, 8, 8, 4, 1, 1),      # empty batch
])
def test_winograd_shapes(rng, algo, case):
    n, c, h, w, k, pad, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k * groups if k % groups else k, c // groups, 3, 3)).astype(np.float32)
    b = rng.standard_normal(wt.shape[0]).astype(np.float32)
    packed = {}
    for _ in range(2):  # second call reuses the transformed filters
        y = fc.conv2d(x, wt, b, 1, pad, 1, groups, activation="relu", algo=algo, packed=packed)
        assert rel_err(y, ref.conv2d(x, wt, b, 1, pad, 1, groups, activation="relu")) < 1e-4
    assert n == 0 or algo in packed


@pytest.mark.parametrize("case", [
    # (N, C, H, W, K, groups, chunk_bytes): tiles per chunk decide the product's kernel
    (1, 40, 13, 13, 70, 1, None),        # 49 tiles: micro-kernel, ragged 32-channel panel
    (1, 1100, 15, 11, 33, 1, None),      # 48 tiles (ragged 7-tile group), two chunks of C
    (3, 16, 14, 14, 32, 1, 20_000),      # three chunks of one image (49 tiles each)
    (2, 8, 12, 12, 16, 1, 1),            # 36 tiles a chunk of one image
    (1, 8, 9, 11, 16, 1, None),          # 30 tiles: SGEMM
    (1, 8, 14, 14, 16, 2, None),         # grouped: SGEMM
])
def test_winograd_f2_products_on_the_micro_kernel(rng, monkeypatch, case):
    """F(2x2)'s transformed products on the channel-vectorized micro-kernel (from 32
    tiles a chunk, groups == 1) equal the reference like the SGEMM path; bias,
    residual and activation still come from the output transform."""
    from fastconv import _algorithms
    n, c, h, w, k, groups, chunk_bytes = case
    if chunk_bytes is not None:
        monkeypatch.setattr(_algorithms, "WINOGRAD_CHUNK_BYTES", chunk_bytes)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c // groups, 3, 3)) / np.sqrt(c * 9 // groups)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    res = rng.standard_normal((n, k, h, w)).astype(np.float32)
    e = ref.activation(ref.conv2d(x.astype(np.float64), wt.astype(np.float64),
                                  b.astype(np.float64), 1, 1, 1, groups) + res, "relu6")
    packed = {}
    for _ in range(2):
        y = fc.conv2d(x, wt, b, 1, 1, 1, groups, activation="relu6", residual=res,
                      algo="winograd_f2x2_3x3", packed=packed)
        assert rel_err(y, e) < 1e-5
    prob = F.conv_problem(x.shape, wt.shape, 1, 1, 1, groups)
    tiles = -(-h // 2) * -(-w // 2)
    per_image = 16 * (c + k) * tiles * 4
    chunk = max(1, min(n, _algorithms.WINOGRAD_CHUNK_BYTES // per_image))
    on_zmm = groups == 1 and tiles * chunk >= 32
    assert _algorithms.Winograd(2).packed_gemms(prob, tiles * chunk) == on_zmm
    assert ("winograd_f2x2_3x3_zmm" in packed) == on_zmm


@pytest.mark.parametrize("case", [
    # (n, c, h, w, k, on the micro-kernel)
    (1, 8, 28, 28, 16, True),     # 49 tiles an image
    (1, 8, 30, 26, 16, True),     # 8 x 7 tiles, ragged last row and column
    (2, 8, 14, 14, 16, False),    # 16 tiles an image: SGEMM however many images
])
def test_winograd_f4_products_on_the_micro_kernel_on_full_width_cores(rng, case):
    """With the full-width AVX-512 rates (planner.RATES "avx512-full") F(4x4)'s products
    run on the micro-kernel on maps of 32 tiles an image or more, and equal the
    reference like the SGEMM path, bias, residual and activation included."""
    from fastconv import _algorithms, planner
    n, c, h, w, k, on_zmm = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = (rng.standard_normal((k, c, 3, 3)) / np.sqrt(c * 9)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    res = rng.standard_normal((n, k, h, w)).astype(np.float32)
    e = ref.activation(ref.conv2d(x.astype(np.float64), wt.astype(np.float64),
                                  b.astype(np.float64), 1, 1, 1, 1) + res, "relu6")
    prob = F.conv_problem(x.shape, wt.shape, 1, 1)
    before = planner.use_rates("avx512-full")
    try:
        packed = {}
        for _ in range(2):
            y = fc.conv2d(x, wt, b, 1, 1, activation="relu6", residual=res,
                          algo="winograd_f4x4_3x3", packed=packed)
            assert rel_err(y, e) < 1e-4
        tiles = -(-h // 4) * -(-w // 4)
        assert _algorithms.Winograd(4).packed_gemms(prob, tiles * n) == on_zmm
        assert ("winograd_f4x4_3x3_zmm" in packed) == on_zmm
        assert _algorithms.Winograd(2).packed_gemms(prob, 64) == (-(-h // 2) * -(-w // 2) >= 32)
        planner.use_rates("avx512")
        assert not _algorithms.Winograd(4).packed_gemms(prob, tiles * n)
        assert _algorithms.Winograd(2).packed_gemms(prob, 64)
        y2 = fc.conv2d(x, wt, b, 1, 1, activation="relu6", residual=res,
                       algo="winograd_f4x4_3x3")
        assert rel_err(y2, e) < 1e-4
        if on_zmm:
            assert rel_err(y2, y) < 1e-5
    finally:
        planner.use_rates(before)


def test_winograd_f4_kept_out_of_auto_beyond_its_bound():
    from fastconv import planner as P
    big = F.conv_problem((1, 4096, 8, 8), (64, 4096, 3, 3), padding=1)
    assert "winograd_f4x4_3x3" not in P.plan(big, prepacked=True).costs
    assert P.REGISTRY["winograd_f4x4_3x3"].serves(big) is None   # still available explicitly


@pytest.mark.parametrize("chunk_bytes", [1, 40_000])
def test_winograd_batches_in_chunks(rng, monkeypatch, chunk_bytes):
    """Images stream through in chunks (one, or two with a shorter tail): same result."""
    from fastconv import _algorithms
    monkeypatch.setattr(_algorithms, "WINOGRAD_CHUNK_BYTES", chunk_bytes)
    x = rng.standard_normal((5, 6, 9, 7)).astype(np.float32)
    w = rng.standard_normal((4, 6, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    res = rng.standard_normal((5, 4, 9, 7)).astype(np.float32)
    expected = ref.activation(ref.conv2d(x, w, b, 1, 1) + res, "relu")
    for algo in WINOGRAD_BOUND:
        y = fc.conv2d(x, w, b, 1, 1, activation="relu", residual=res, algo=algo)
        assert rel_err(y, expected) < 1e-4


@pytest.mark.parametrize("hw", [5, 14, 31, 32, 40])
@pytest.mark.parametrize("activation", [None, "relu6"])
def test_depthwise_epilogue_paths(rng, hw, activation):
    """Short rows take the whole-plane epilogue, long rows the per-row one: same result."""
    x = rng.standard_normal((2, 6, hw, hw)).astype(np.float32)
    w = rng.standard_normal((6, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = fc.conv2d(x, w, b, 1, 1, 1, 6, activation=activation, algo="depthwise")
    assert rel_err(y, ref.conv2d(x, w, b, 1, 1, 1, 6, activation=activation)) < 1e-4


@pytest.mark.parametrize("streamed", [False, True])
@pytest.mark.parametrize("width", ["pixels", "channels"])
@pytest.mark.parametrize("case", [
    # (N, C, H, W, K, stride, groups)
    (1, 160, 7, 7, 96, 1, 1),      # 49 pixels = 7 groups of 7, 3 panels of 32
    (3, 40, 5, 9, 70, 1, 1),       # 45 pixels: a short pixel group; K % 32 = 6
    (1, 600, 4, 4, 33, 1, 1),      # two reduction chunks of the channel kernel
    (2, 300, 14, 14, 20, 1, 1),    # two chunks of the pixel kernel; unaligned 196-float rows
    (1, 24, 9, 11, 40, 2, 2),      # strided and grouped
    (1, 8, 1, 1, 8, 1, 1),         # one pixel
    (2, 24, 40, 40, 20, 1, 1),     # aligned 1600-float rows: column blocks, a ragged last
    (1, 300, 32, 32, 28, 1, 1),    # ... and two reduction chunks
])
def test_pointwise_packed_both_orientations(rng, monkeypatch, width, case, streamed):
    """Pixel-vectorized (MR-channel panels) and channel-vectorized (NR-channel panels,
    MP-pixel tiles) micro-kernel paths, each forced, with a fused residual + activation;
    streamed: as for an input past planner.STREAMED_BYTES (the next column blocks
    prefetched, zmm.gemm_block)."""
    from fastconv import _algorithms, planner
    from fastconv.kernels.cpu import zmm
    wd = zmm.MR if width == "pixels" else zmm.NR
    if streamed:
        monkeypatch.setattr(planner, "STREAMED_BYTES", 0)

    def layout(self, prob, threads):
        tile, kblock = _algorithms.packed_blocking(prob, threads, 0, wd)
        return 0.0, wd, tile, kblock

    monkeypatch.setattr(_algorithms.PointwisePacked, "_layout", layout)
    n, c, h, w, k, stride, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, 1, 1)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    oh, ow = -(-h // stride), -(-w // stride)
    res = rng.standard_normal((n, k, oh, ow)).astype(np.float32)
    packed = {}
    for _ in range(2):  # the second call reuses the packed weights
        y = fc.conv2d(x, wt, b, stride=stride, groups=groups, activation="relu6", residual=res,
                      algo="pointwise_packed", packed=packed)
        expected = ref.activation(ref.conv2d(x, wt, b, stride, groups=groups) + res, "relu6")
        assert rel_err(y, expected) < 1e-4
    assert [k for k in packed if k != F._BOUND] == [f"pointwise_packed_{wd}"]


@pytest.mark.parametrize("width", ["pixels", "channels"])
@pytest.mark.parametrize("case", [
    # (N, C, H, W, K, R, stride, padding, groups)
    (1, 64, 7, 7, 40, 3, 1, 1, 1),      # 49 pixels, Cg*R*S = 576: two chunks of either kernel
    (2, 6, 9, 11, 20, 3, 2, 1, 2),      # strided, grouped, ragged everything
    (1, 3, 23, 19, 8, 7, 2, 3, 1),      # stem-like
    (1, 70, 5, 5, 33, 3, 1, 1, 1),      # Cg*R*S = 630 > KC_T
])
def test_im2col_packed_both_orientations(rng, monkeypatch, width, case):
    from fastconv import _algorithms
    from fastconv.kernels.cpu import zmm
    wd = zmm.MR if width == "pixels" else zmm.NR

    def layout(prob, threads):
        tile, kblock = _algorithms.packed_blocking(prob, threads, prob.cg * prob.r * prob.s, wd)
        return 0.0, wd, tile, kblock

    monkeypatch.setattr(_algorithms, "_im2col_packed_layout", layout)
    n, c, h, w, k, r, stride, padding, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    expected = ref.conv2d(x, wt, b, stride, padding, groups=groups)
    res = rng.standard_normal(expected.shape).astype(np.float32)
    packed = {}
    y = fc.conv2d(x, wt, b, stride, padding, groups=groups, activation="hardswish",
                  residual=res, algo="im2col_packed", packed=packed)
    pre = expected + res
    assert rel_err(y, pre * np.clip(pre + 3, 0, 6) / 6) < 1e-4
    assert [k for k in packed if k != F._BOUND] == [f"im2col_packed_{wd}"]


def test_micro_kernel_tiles_and_assembly(rng):
    """Both register tiles against NumPy (fresh and accumulating, odd offsets and strides;
    the prefetching variants give the same results), and, on AVX-512, the 16
    accumulators really are zmm FMAs and the prefetches are there (compiled fresh:
    cached code has no assembly)."""
    import llvmlite.binding as llvm
    from numba import njit

    from fastconv.kernels.cpu import zmm

    @njit
    def tiles(a, x, y, yt, nc, b, r, pf):
        zmm.gemm_tile(a, 0, zmm.MR, x, 3, 40, nc, y, 0, zmm.NR, 0, b, 0, 0, r, 0, 0, 0)
        zmm.gemm_tile(a, 0, zmm.MR, x, 3, 40, nc, y, 0, zmm.NR, 1, b, 0, 0, r, 0, 0, 0)  # y +=
        # roles swapped, stored transposed: yt[l, p] (channel rows of MP pixels)
        zmm.gemm_tile_t_store(x, 3, 40, a, 0, nc, yt, 0, zmm.MP, zmm.NR, zmm.MP, b, 0, 0,
                              r, 0, 0, 1, pf, 5)  # a prefetch 5 floats on per step

    @njit
    def tile_pf(a, x, y, nc, b, r, pf):
        zmm.gemm_tile_pf(a, 0, zmm.MR, x, 3, 40, nc, y, 0, zmm.NR, 0, b, 0, 0, r, 0, 0, pf)

    nc = 37
    a = rng.standard_normal(nc * zmm.NR + zmm.NR).astype(np.float32)
    x = rng.standard_normal(3 + nc * 40 + 8).astype(np.float32)     # rows of 40 from offset 3
    y = np.zeros(zmm.MR * zmm.NR, np.float32)
    yt = np.zeros(zmm.MP * zmm.NR, np.float32)
    b = np.zeros(zmm.NR, np.float32)
    tiles(a, x, y, yt, nc, b, np.zeros(1, np.float32), 0)
    # prefetching never changes a result, wherever it points (even outside the array)
    y2 = np.zeros_like(y)
    yt2 = np.zeros_like(yt)
    tiles(a, x, y2, yt2, nc, b, np.zeros(1, np.float32), 1 << 20)
    np.testing.assert_array_equal(y2, y)
    np.testing.assert_array_equal(yt2, yt)
    y3 = np.zeros_like(y)
    tile_pf(a, x, y3, nc, b, np.zeros(1, np.float32), zmm.NR)
    xm = np.stack([x[3 + c * 40:3 + c * 40 + zmm.NR] for c in range(nc)]).astype(np.float64)
    am = np.stack([a[c * zmm.MR:c * zmm.MR + zmm.MR] for c in range(nc)]).astype(np.float64)
    at = np.stack([a[c * zmm.NR:c * zmm.NR + zmm.NR] for c in range(nc)]).astype(np.float64)
    # gemm_tile: y[r, j] = 2 * sum_c a[c*MR + r] x[3 + 40c + j]
    np.testing.assert_allclose(y.reshape(zmm.MR, zmm.NR), 2 * am.T @ xm, rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(y3.reshape(zmm.MR, zmm.NR), am.T @ xm, rtol=1e-5, atol=1e-4)
    # gemm_tile_t_store: yt[l, p] = sum_c x[3 + 40c + p] a[c*NR + l]
    np.testing.assert_allclose(yt.reshape(zmm.NR, zmm.MP), at.T @ xm[:, :zmm.MP],
                               rtol=1e-5, atol=1e-4)
    if "+avx512f" in llvm.get_host_cpu_features().flatten().split(","):
        asm = "".join(tiles.inspect_asm().values())
        fmas = [ln for ln in asm.splitlines() if "vfmadd" in ln and "zmm" in ln]
        assert len(fmas) >= 16 + 16 + 14  # one unrolled reduction step per call site
        asm_pf = "".join(tile_pf.inspect_asm().values())
        assert "prefetcht0" in asm_pf and "prefetcht0" in asm


def test_transposed_tile_store_epilogue(rng):
    """gemm_tile_t_store against a float64 reference: partial channel panels and pixel
    groups (nothing outside them is touched), accumulation into y, the epilogue only
    on the final chunk (bias, residual, every activation), NaN passing through."""
    from numba import njit

    from fastconv.kernels.cpu import zmm
    from fastconv.kernels.cpu.epilogue import activate

    @njit
    def store(x, x_off, ldx, wp, w_off, nc, y, y_off, ldy, nr, npx, b, b_off, act, res,
              has_res, acc, fin):
        zmm.gemm_tile_t_store(x, x_off, ldx, wp, w_off, nc, y, y_off, ldy, nr, npx, b, b_off,
                              act, res, has_res, acc, fin, 7 * nc * zmm.NR, 3)

    MP, NR = zmm.MP, zmm.NR
    for it in range(80):
        nc, ldx, ldy = int(rng.integers(0, 30)), int(rng.integers(MP, 24)), int(rng.integers(MP, 16))
        nr, npx = int(rng.integers(1, NR + 1)), int(rng.integers(1, MP + 1))
        act, has_res, acc, fin = (int(v) for v in rng.integers(0, [4, 2, 2, 2]))
        x_off, w_off, y_off, b_off = (int(v) for v in rng.integers(0, 5, 4))
        x = rng.standard_normal(x_off + nc * ldx + MP).astype(np.float32)
        wp = rng.standard_normal(w_off + nc * NR).astype(np.float32)
        y = (4 * rng.standard_normal(y_off + NR * ldy + 8)).astype(np.float32)
        if it % 10 == 0:
            x[x_off] = np.nan  # pixel 0 of every channel row becomes NaN
        b = rng.standard_normal(b_off + NR).astype(np.float32)
        res = rng.standard_normal(y.size).astype(np.float32) if has_res else np.zeros(1, np.float32)
        want = y.astype(np.float64)
        for r in range(nr):
            for j in range(npx):
                o = y_off + r * ldy + j
                v = sum(float(x[x_off + c * ldx + j]) * float(wp[w_off + c * NR + r])
                        for c in range(nc)) + (float(y[o]) if acc else 0.0)
                if fin:
                    v = activate(np.float32(v + b[b_off + r] + (res[o] if has_res else 0.0)), act)
                want[o] = v
        store(x, x_off, ldx, wp, w_off, nc, y, y_off, ldy, nr, npx, b, b_off, act, res, has_res,
              acc, fin)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, err_msg=f"case {it}")


def test_blocked_tile_store_epilogue(rng):
    """gemm_tile_t_blocked (its prefetching and 16-channel variants) against a float64
    reference: the channel-blocked store of a half or whole panel and a partial pixel
    group (nothing outside them touched), accumulation into y, the bias and activation
    only on the final chunk (the tile starts from the bias there), an empty reduction."""
    from numba import njit

    from fastconv.kernels.cpu import zmm
    from fastconv.kernels.cpu.epilogue import activate

    @njit
    def store(x, x_off, ldx, wp, w_off, nc, y, y_off, bstride, nr, npx, b, b_off, act, acc, fin,
              pf):
        if pf == 2:  # the 16-channel variant
            zmm.gemm_tile_t_blocked_16(x, x_off, ldx, wp, w_off, nc, y, y_off, bstride, nr, npx,
                                       b, b_off, act, acc, fin)
        elif pf:
            zmm.gemm_tile_t_blocked_pf(x, x_off, ldx, wp, w_off, nc, y, y_off, bstride, nr, npx,
                                       b, b_off, act, acc, fin, 5, 3)
        else:
            zmm.gemm_tile_t_blocked(x, x_off, ldx, wp, w_off, nc, y, y_off, bstride, nr, npx,
                                    b, b_off, act, acc, fin)

    MP, NR = zmm.MP, zmm.NR
    for it in range(60):
        nc, ldx = int(rng.integers(0, 30)), int(rng.integers(MP, 24))
        nr, npx = 16 * int(rng.integers(1, 3)), int(rng.integers(1, MP + 1))
        act, acc, fin, pf = (int(v) for v in rng.integers(0, [4, 2, 2, 3]))
        if pf == 2:
            nr = 16
        x_off, w_off, y_off, b_off = (int(v) for v in rng.integers(0, 5, 4))
        bstride = 16 * MP + int(rng.integers(0, 9))
        x = rng.standard_normal(x_off + nc * ldx + MP).astype(np.float32)
        wp = rng.standard_normal(w_off + nc * NR + 16).astype(np.float32)
        y = (4 * rng.standard_normal(y_off + 2 * bstride + 8)).astype(np.float32)
        b = rng.standard_normal(b_off + NR).astype(np.float32)
        want = y.astype(np.float64)
        for r in range(nr):
            for j in range(npx):
                o = y_off + (r // 16) * bstride + j * 16 + r % 16
                v = sum(float(x[x_off + c * ldx + j]) * float(wp[w_off + c * NR + r])
                        for c in range(nc)) + (float(y[o]) if acc else 0.0)
                if fin:
                    v = activate(np.float32(v + b[b_off + r]), act)
                want[o] = v
        store(x, x_off, ldx, wp, w_off, nc, y, y_off, bstride, nr, npx, b, b_off, act, acc, fin,
              pf)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, err_msg=f"case {it}")


def test_tile_store_epilogue(rng):
    """gemm_tile (MR channels x NR pixels) with the epilogue in its stores: accumulation,
    bias, residual and every activation on the final chunk only, NaN passing through."""
    from numba import njit

    from fastconv.kernels.cpu import zmm
    from fastconv.kernels.cpu.epilogue import activate

    @njit
    def tile(a, a_off, x, x_off, ldx, nc, y, y_off, ldy, acc, b, b_off, act, res, has_res, fin):
        if fin:  # the prefetching variant on final chunks (the same results)
            zmm.gemm_tile_pf(a, a_off, zmm.MR, x, x_off, ldx, nc, y, y_off, ldy, acc, b, b_off,
                             act, res, has_res, fin, zmm.NR)
        else:
            zmm.gemm_tile(a, a_off, zmm.MR, x, x_off, ldx, nc, y, y_off, ldy, acc, b, b_off,
                          act, res, has_res, fin, 0)

    MR, NR = zmm.MR, zmm.NR
    for it in range(60):
        nc, ldx, ldy = int(rng.integers(0, 30)), int(rng.integers(NR, 50)), int(rng.integers(NR, 40))
        act, has_res, acc, fin = (int(v) for v in rng.integers(0, [4, 2, 2, 2]))
        a_off, x_off, y_off, b_off = (int(v) for v in rng.integers(0, 5, 4))
        a = rng.standard_normal(a_off + nc * MR).astype(np.float32)
        x = rng.standard_normal(x_off + nc * ldx + NR).astype(np.float32)
        if it % 10 == 0:
            x[x_off + 5] = np.nan
        y = (4 * rng.standard_normal(y_off + MR * ldy + NR)).astype(np.float32)
        b = rng.standard_normal(b_off + MR).astype(np.float32)
        res = rng.standard_normal(y.size).astype(np.float32) if has_res else np.zeros(1, np.float32)
        want = y.astype(np.float64)
        for r in range(MR):
            for j in range(NR):
                o = y_off + r * ldy + j
                v = sum(float(a[a_off + c * MR + r]) * float(x[x_off + c * ldx + j])
                        for c in range(nc)) + (float(y[o]) if acc else 0.0)
                if fin:
                    v = activate(np.float32(v + b[b_off + r] + (res[o] if has_res else 0.0)), act)
                want[o] = v
        tile(a, a_off, x, x_off, ldx, nc, y, y_off, ldy, acc, b, b_off, act, res, has_res, fin)
        np.testing.assert_allclose(y, want, rtol=1e-4, atol=1e-4, err_msg=f"case {it}")


@pytest.mark.parametrize("case", [
    # (C, H, W, padding): odd/even sizes and every padding parity, channel multiplier 2
    (5, 9, 9, 1), (3, 10, 7, 1), (4, 8, 8, (0, 1, 0, 1)), (2, 7, 12, (1, 0, 1, 0)),
    (3, 1, 1, 1), (2, 2, 5, (2, 1, 0, 2)), (6, 13, 11, 0),
])
@pytest.mark.parametrize("with_res", [False, True])
def test_depthwise_stride2_planes(rng, case, with_res):
    """3x3 stride-2 depthwise (rows split into even and odd columns) at every padding parity."""
    c, h, w, padding = case
    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((2 * c, 1, 3, 3)).astype(np.float32)
    b = rng.standard_normal(2 * c).astype(np.float32)
    pre = ref.conv2d(x, wt, b, 2, padding, 1, c)
    res = rng.standard_normal(pre.shape).astype(np.float32) if with_res else None
    y = fc.conv2d(x, wt, b, stride=2, padding=padding, groups=c, algo="depthwise",
                  activation="relu6", residual=res)
    expected = ref.activation(pre + (res if with_res else 0), "relu6")
    assert rel_err(y, expected) < 1e-4


@pytest.mark.parametrize("c,h,k,r,stride,groups", [
    (32, 14, 32, 3, 1, 32),    # depthwise_blocked
    (24, 9, 40, 1, 1, 1),      # 1x1
    (24, 9, 40, 1, 2, 1),      # strided 1x1
    (8, 11, 12, 3, 2, 1),      # im2col family
    (16, 10, 16, 3, 1, 1),     # Winograd / direct
])
def test_repeat_call_fast_path(rng, monkeypatch, c, h, k, r, stride, groups):
    """A layer's repeat calls skip planning (the bound call) and still give the full
    path's results, for residual / out / activation variants; anything that differs
    from the bound call (shape, dtype, layout, arguments) takes the validating path."""
    x = rng.standard_normal((2, c, h, h)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, r)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    pad = r // 2
    packed = {}
    y0 = fc.conv2d(x, wt, b, stride, pad, groups=groups, activation="relu", packed=packed)
    assert F._BOUND in packed
    expected = ref.activation(ref.conv2d(x, wt, b, stride, pad, groups=groups), "relu")
    assert rel_err(y0, expected) < 1e-4

    def no_planning(*a, **kw):
        raise AssertionError("a repeat call must not plan again")

    with monkeypatch.context() as m:
        m.setattr(F, "_conv_plan", no_planning)
        x2 = rng.standard_normal(x.shape).astype(np.float32)
        x2_copy = x2.copy()
        res = rng.standard_normal(y0.shape).astype(np.float32)
        res_copy = res.copy()
        out = np.full(y0.shape, np.nan, np.float32)
        y = fc.conv2d(x2, wt, b, stride, pad, groups=groups, activation="relu", residual=res,
                      packed=packed, out=out)
        assert y is out
        want = ref.activation(ref.conv2d(x2, wt, b, stride, pad, groups=groups) + res, "relu")
        assert rel_err(y, want) < 1e-4
        np.testing.assert_array_equal(x2, x2_copy)
        np.testing.assert_array_equal(res, res_copy)
        # the destination is still checked
        with pytest.raises(ValueError, match="out must not overlap"):
            fc.conv2d(x2, wt, b, stride, pad, groups=groups, activation="relu", residual=res,
                      packed=packed, out=res)

    # different arguments, layouts and dtypes: planned and validated again, still right
    xt = np.ascontiguousarray(x.transpose(0, 1, 3, 2)).transpose(0, 1, 3, 2)  # F-ordered planes
    for args, kw in [((xt, wt, b, stride, pad), {}),
                     ((x.astype(np.float64), wt, b, stride, pad), {}),
                     ((x, wt, None, stride, pad), {}),
                     ((x, wt, b, 1, pad), {}),
                     ((x[:1], wt, b, stride, pad), {}),
                     ((x[0], wt, b, stride, pad), {})]:
        y = fc.conv2d(*args, groups=groups, activation="relu6", packed=packed, **kw)
        xa, bb, st = np.asarray(args[0], np.float32), args[2], args[3]
        want = ref.activation(ref.conv2d(xa if xa.ndim == 4 else xa[None], wt, bb, st, pad,
                                         groups=groups), "relu6")
        assert rel_err(y if y.ndim == 4 else y[None], want) < 1e-4
    with pytest.raises(ValueError, match="channels"):
        fc.conv2d(x[:, :c - 1] if groups == 1 else x[:, :c // 2], wt, b, stride, pad,
                  groups=groups, packed=packed, layer="fast")
    with pytest.raises(TypeError, match="dtype"):
        fc.conv2d(x.astype(np.int32), wt, b, stride, pad, groups=groups, packed=packed)


# -- taps that only read padding (planner.live_taps): trimmed, same result -------------------

TRIM_CASES = [  # (N, C, H, W, K, R, S, stride, padding, dilation, groups)
    (1, 40, 1, 1, 33, 3, 3, 1, 1, 1, 1),       # centre tap only: a 1x1
    (3, 16, 1, 1, 8, 5, 5, 1, 2, 1, 1),
    (1, 24, 2, 2, 20, 3, 3, 2, 1, 1, 1),       # 3x3/2 to 1x1: 2x2 taps, bottom pad dropped
    (2, 12, 1, 7, 10, 3, 3, 1, 1, 1, 1),       # one-row map: 1x3 taps
    (1, 6, 3, 1, 9, 3, 5, 1, (1, 2), 1, 3),    # one-column map, grouped
    (1, 8, 1, 1, 8, 3, 3, 1, 2, 2, 1),         # dilated: centre tap only
    (1, 8, 1, 2, 16, 3, 3, 1, 1, 1, 8),        # depthwise, multiplier 2
    (0, 8, 1, 1, 8, 3, 3, 1, 1, 1, 1),         # empty batch
    (1, 5, 1, 1, 7, 5, 5, 2, 3, 1, 1),         # stride 2 on 1x1: 3x3 of the 5x5 taps
    (1, 6, 1, 2, 5, 3, 3, 1, (2, 0, 1, 2), 1, 1),  # asymmetric (ONNX) pads: 1x3 taps
]


@pytest.mark.parametrize("case", TRIM_CASES, ids=lambda c: "x".join(map(str, c)).replace(" ", ""))
@pytest.mark.parametrize("algo", ALGOS)
def test_trimmed_taps_match_reference(rng, case, algo):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    res = rng.standard_normal(ref.conv2d(x, wt, b, stride, padding, dilation, groups).shape) \
        .astype(np.float32)
    prob = F.conv_problem(x.shape, wt.shape, stride, padding, dilation, groups)
    assert planner.live_taps(prob) is not None
    if not serves(algo, x.shape, wt.shape, stride, padding, dilation, groups):
        with pytest.raises(ValueError, match=f"algo='{algo}' cannot run this convolution"):
            fc.conv2d(x, wt, b, stride, padding, dilation, groups, algo=algo)
        return
    args = (x.copy(), wt.copy(), b.copy(), res.copy())
    packed = {}
    for _ in range(2):  # the first call binds, the second takes the layer's fast path
        y = fc.conv2d(x, wt, b, stride, padding, dilation, groups, activation="relu",
                      algo=algo, residual=res, packed=packed)
        expected = ref.activation(ref.conv2d(x, wt, b, stride, padding, dilation, groups)
                                  + res, "relu")
        assert y.shape == expected.shape and rel_err(y, expected) < 1e-4
    for a, a0 in zip((x, wt, b, res), args):
        np.testing.assert_array_equal(a, a0)  # nothing the caller passed is written


def test_trimmed_layer_keeps_each_geometry_apart(rng):
    """One layer (one weight cache) called on maps that trim differently and on one that
    does not: each result is right, and the trimmed weights live in entries of their own."""
    conv = fc.nn.Conv2d(32, 48, 3, padding=1)
    conv.weight[:] = rng.standard_normal(conv.weight.shape).astype(np.float32)
    for hw in [(1, 1), (6, 5), (1, 4), (1, 1), (6, 5)]:
        x = rng.standard_normal((2, 32) + hw).astype(np.float32)
        expected = ref.conv2d(x, conv.weight, conv.bias, 1, 1)
        assert rel_err(conv(x), expected) < 1e-4
    trims = [key[1] for key in conv.packed_cache()
             if isinstance(key, tuple) and key[0] == "trimmed"]
    assert sorted(trims) == [(0, 3, 1, 2), (1, 2, 1, 2)] or sorted(trims) == [(1, 2, 0, 3),
                                                                             (1, 2, 1, 2)]


def test_resnet_on_a_small_image_trims_its_last_stage(rng):
    """A ResNet on a 32x32 image reaches its last stage at 1x1: those 3x3 convs run as 1x1
    (explain says so) and the model still equals PyTorch."""
    torch = pytest.importorskip("torch")
    from fastconv import models
    twin = models.torch_twin("resnet_tiny", widths=(8, 16, 16, 24), num_classes=5).eval()
    x = rng.standard_normal((1, 3, 32, 32)).astype(np.float32)
    model = fc.optimize(fc.from_torch(twin, x), x)
    with torch.no_grad():
        expected = twin(torch.from_numpy(x)).numpy()
    assert rel_err(model(x), expected) < 1e-4
    text = model.explain(x, repeat=1, roof_gflops=100.0)
    assert "1x1/3x3 " in text and "only ever read padding" in text


@pytest.mark.parametrize("case", [  # (N, C, H, W, K, R, S, stride, padding): rowdot's blocks
    (1, 300, 2, 2, 37, 3, 3, 1, 1),   # K % 4 == 1, P = 4 exactly
    (3, 17, 1, 3, 18, 3, 3, 1, 1),    # P = 9 across images, K % 4 == 2
    (1, 64, 4, 4, 70, 1, 1, 2, 0),    # strided 1x1, P = 4
    (2, 8, 3, 3, 3, 2, 2, 1, 0),      # K < 4: only single rows
    (3, 20, 1, 1, 10, 3, 3, 1, 1),    # P = 3 < 4: a row at a time
    (1, 1, 1, 1, 1, 1, 1, 1, 0),
])
@pytest.mark.parametrize("threads", [1, 2])
def test_rowdot_blocks_and_tasks(rng, case, threads):
    n, c, h, w, k, r, s, stride, padding = case
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    before = fc.get_num_threads()
    fc.set_num_threads(threads)
    try:
        y = fc.conv2d(x, wt, b, stride, padding, activation="relu6", algo="rowdot")
    finally:
        fc.set_num_threads(before)
    expected = ref.conv2d(x, wt, b, stride, padding, activation="relu6")
    assert rel_err(y, expected) < 1e-4


@settings(max_examples=80, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(0, 2), c=st.integers(1, 4), h=st.integers(1, 12), w=st.integers(1, 70),
       pads=st.tuples(*[st.integers(0, 3)] * 4), sw=st.sampled_from([2, 3]))
def test_padded_copies(n, c, h, w, pads, sw):
    """The padded input copies the convolutions read (pad.pad_nchw, and
    pad.pad_nchw_phased with each row split into its column phases) against np.pad,
    every element of the buffer written: rows of every width around the 16-float
    vectors they are copied in, odd widths, left padding of either parity."""
    from fastconv.kernels.cpu import pad
    pt, pb, pl, pr = pads
    x = np.random.default_rng(h * 100 + w).standard_normal((n, c, h, w)).astype(np.float32)
    xpad = np.pad(x, ((0, 0), (0, 0), (pt, pb), (pl, pr)))
    xp = np.full(xpad.shape, np.nan, np.float32)
    pad.pad_nchw(x, xp, pt, pl)
    np.testing.assert_array_equal(xp, xpad)
    ws = -(-(w + pl + pr) // sw)
    wide = np.pad(xpad, ((0, 0), (0, 0), (0, 0), (0, ws * sw - xpad.shape[3])))
    want = np.concatenate([wide[..., ph::sw] for ph in range(sw)], axis=3)
    xs = np.full(want.shape, np.nan, np.float32)
    pad.pad_nchw_phased(x, xs, pt, pl, sw)
    np.testing.assert_array_equal(xs, want)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(1, 40), w=st.integers(1, 90),
       sh=st.sampled_from([1, 2, 3, 4, 16]), sw=st.sampled_from([1, 2, 3, 4, 5, 16]),
       pt=st.integers(0, 5), pl=st.integers(0, 5), cut=st.booleans(), as_batch=st.booleans())
def test_space_to_depth_copies(n, c, h, w, sh, sw, pt, pl, cut, as_batch):
    """pad.pad_space_to_depth against NumPy: every plane element written (zeros past the
    input), rows of every width around the 16-float vectors they are copied in at
    sw 1 and 2 (both phases of a row in one pass at sw 2, or one at a time where the
    planes cut the row short), left padding wider than a window, planes cut to a conv's
    output size (patch_packed) or holding the whole padded input (the sparse kernels),
    and the phases as a batch of images (dilated_phases)."""
    from fastconv.kernels.cpu import pad
    x = np.random.default_rng(h * 100 + w).standard_normal((n, c, h, w)).astype(np.float32)
    hs, ws = -(-(h + pt) // sh), -(-(w + pl) // sw)
    if cut:
        hs, ws = max(1, (h + pt) // sh), max(1, (w + pl) // sw)
    xpad = np.pad(x, ((0, 0), (0, 0), (pt, hs * sh), (pl, ws * sw)))
    want = xpad[:, :, :hs * sh, :ws * sw].reshape(n, c, hs, sh, ws, sw)
    if as_batch:
        want = want.transpose(3, 5, 0, 1, 2, 4).reshape(sh * sw * n, c, hs, ws)
    else:
        want = want.transpose(0, 1, 3, 5, 2, 4).reshape(n, c * sh * sw, hs, ws)
    xs = np.full(want.shape, np.nan, np.float32)
    pad.pad_space_to_depth(x, xs, pt, pl, sh, sw, as_batch)
    np.testing.assert_array_equal(xs, want)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(algo=st.sampled_from(["pointwise", "pointwise_packed"]), n=st.integers(1, 2),
       c=st.integers(1, 40), h=st.integers(1, 30), w=st.integers(1, 70),
       k=st.integers(1, 40), sh=st.integers(1, 3), sw=st.integers(1, 3),
       groups=st.sampled_from([1, 2]))
def test_strided_1x1_gathers(rng, algo, n, c, h, w, k, sh, sw, groups):
    """Strided 1x1 convolutions gather their subsampled pixels row segment by row segment
    (tiles.gather_pixels_flat: a vector copy at stride 1, even columns by shuffles at
    stride 2, a loop otherwise), segments cut by tiles anywhere in a row."""
    c, k = c * groups, k * groups
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, 1, 1)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    y = fc.conv2d(x, wt, b, stride=(sh, sw), groups=groups, algo=algo)
    expected = ref.conv2d(x, wt, b, (sh, sw), groups=groups)
    assert rel_err(y, expected) < 1e-4
