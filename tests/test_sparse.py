"""Pruning: CSR kernels against the reference, fc.prune, and the pruned digits CNN."""
import digits
import numpy as np
import pytest
from conftest import rel_err
from fastconv.kernels import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 2), g=st.integers(1, 2), cg=st.integers(1, 5), kg=st.integers(1, 6),
       h=st.integers(1, 9), w=st.integers(1, 9), r=st.integers(1, 3), s=st.integers(1, 3),
       stride=st.integers(1, 2), pad=st.integers(0, 2), dil=st.integers(1, 2),
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]), act=st.sampled_from([None, "relu"]),
       use_res=st.booleans(), seed=st.integers(0, 99))
def test_sparse_conv_matches_reference(n, g, cg, kg, h, w, r, s, stride, pad, dil, density, act,
                                       use_res, seed):
    rng = np.random.default_rng(seed)
    if h + 2 * pad < dil * (r - 1) + 1 or w + 2 * pad < dil * (s - 1) + 1:
        return
    x = rng.standard_normal((n, g * cg, h, w)).astype(np.float32)
    wt = rng.standard_normal((g * kg, cg, r, s)).astype(np.float32)
    wt[rng.random(wt.shape) >= density] = 0
    b = rng.standard_normal(g * kg).astype(np.float32)
    e = ref.conv2d(x, wt, b, stride, pad, dil, g)
    res = rng.standard_normal(e.shape).astype(np.float32) if use_res else None
    y = fc.sparse_conv2d(x, wt, b, stride, pad, dil, g, activation=act, residual=res)
    e = e + (res if use_res else 0)
    e = np.maximum(e, 0) if act else e
    assert rel_err(y, e) < 1e-5


SHAPES = [  # (n, c, h, w, k, r, stride, pad, dilation): full and partial tiles of every width
    (1, 8, 30, 30, 10, 3, 1, 1, 1),   # flat, 64-pixel tiles
    (3, 8, 20, 20, 10, 3, 1, 1, 1),   # flat, 32-pixel tiles
    (1, 6, 40, 70, 7, 3, 2, 1, 1),    # row tiles of 64 (stride 2)
    (2, 6, 40, 50, 7, 3, 2, 1, 1),    # row tiles of 32
    (1, 6, 12, 12, 7, 1, 2, 0, 1),    # row tiles of 16, strided 1x1
    (1, 5, 9, 33, 4, 5, 1, 2, 2),     # dilated 5x5, flat
    (1, 32, 7, 7, 64, 3, 1, 1, 1),    # a 7x7 map: output channels split over tasks
    (1, 16, 23, 17, 5, 3, (2, 1), 1, 1),  # row stride only, rows of 17
]


@pytest.mark.parametrize("shape", SHAPES)
def test_sparse_conv_tiles_match_reference(shape, rng):
    n, c, h, w, k, r, stride, pad, dil = shape
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, r, r)).astype(np.float32)
    wt[rng.random(wt.shape) < 0.7] = 0
    wt[0] = 0  # an output channel with no nonzeros: bias only
    b = rng.standard_normal(k).astype(np.float32)
    e = ref.conv2d(x, wt, b, stride, pad, dil, 1)
    res = rng.standard_normal(e.shape).astype(np.float32)
    x0, res0 = x.copy(), res.copy()
    for act, f in (("relu", lambda v: np.maximum(v, 0)), ("relu6", lambda v: np.clip(v, 0, 6)),
                   ("hardswish", lambda v: v * np.clip(v + 3, 0, 6) / 6), (None, lambda v: v)):
        y = fc.sparse_conv2d(x, wt, b, stride, pad, dil, activation=act, residual=res)
        assert rel_err(y, f(e + res)) < 1e-5, act
    assert rel_err(fc.sparse_conv2d(x, wt, b, stride, pad, dil), e) < 1e-5
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(res, res0)


@pytest.mark.parametrize("nv", [1, 2, 4])
@pytest.mark.parametrize("stride,pad", [(1, 1), (1, 0), (2, 1), ((1, 3), 2)])
def test_sparse_tile_kernel_every_blocking(nv, stride, pad, rng):
    """The kernel itself under every tile width, tile grouping and channel split the
    planner could pick (and some it would not), on a padded grid, on y's own layout
    (1x1 below) and on stride phases."""
    from fastconv import sparse as fs
    from fastconv.functional import conv_problem
    from fastconv.kernels.cpu import sparse as ks
    r = 1 if pad == 0 else 3
    x = rng.standard_normal((2, 5, 11, 21)).astype(np.float32)
    wt = rng.standard_normal((9, 5, r, r)).astype(np.float32)
    wt[rng.random(wt.shape) < 0.5] = 0
    b = rng.standard_normal(9).astype(np.float32)
    prob = conv_problem(x.shape, wt.shape, stride, pad, 2)
    e = np.maximum(ref.conv2d(x, wt, b, stride, pad, 2), 0)
    csr = fs.csr_conv(wt, prob.dilation, 1)
    xs = fs._phase_planes(prob, x).copy()
    offs = fs._tap_offsets(csr, prob, None, "t")
    no_res = np.zeros((1, 1, 1, 1), np.float32)
    for tgroup, kblock, chunk in ((1, 9, 5), (3, 4, 2), (100, 1, 1), (2, 100, 3)):
        y = np.full(e.shape, np.nan, np.float32)
        line = np.empty((4, min(kblock, 9) * 16 * nv), np.float32)
        cptr = fs._chunk_pointers(csr, 9, 5, chunk)
        ks.sparse_conv2d_tiles(xs, cptr, offs, csr[4], b, y, 1, no_res, False, nv, tgroup,
                               kblock, line)
        assert rel_err(y, e) < 1e-5, (tgroup, kblock, chunk)


def test_space_to_depth_planes(rng):
    from fastconv.kernels.cpu import pad
    x = rng.standard_normal((2, 3, 7, 10)).astype(np.float32)
    for sh, sw, pt, pl in ((2, 2, 1, 1), (3, 2, 0, 2), (1, 3, 2, 0)):
        xpad = np.pad(x, ((0, 0), (0, 0), (pt, 3), (pl, 4)))
        hs, ws = -(-(7 + pt + 1) // sh), -(-(10 + pl + 2) // sw)
        xs = np.full((2, 3 * sh * sw, hs, ws), np.nan, np.float32)
        pad.pad_space_to_depth(x, xs, pt, pl, sh, sw)
        for pr in range(sh):
            for pc in range(sw):
                want = xpad[:, :, pr::sh, pc::sw][:, :, :hs, :ws]
                got = xs[:, pr * sw + pc::sh * sw]
                np.testing.assert_array_equal(got[:, :, :want.shape[2], :want.shape[3]], want)


def test_sparse_tiling_choices():
    from fastconv.functional import conv_problem
    from fastconv.sparse import _tiling
    nv, ntiles, tgroup, kblock = _tiling(conv_problem((1, 64, 56, 56), (64, 64, 3, 3), 1, 1), 2)
    assert (nv, ntiles, kblock) == (4, -(-(55 * 58 + 56) // 64), 64) and tgroup > 1
    nv, ntiles, _, kblock = _tiling(conv_problem((1, 512, 7, 7), (512, 512, 3, 3), 1, 1), 2)
    assert (nv, ntiles) == (4, 1) and kblock == 64  # one tile: channels split
    nv, ntiles, _, kblock = _tiling(conv_problem((1, 1024, 14, 14), (256, 1024, 1, 1)), 2)
    assert (nv, ntiles) == (2, 7) and kblock == 128  # 1x1 on a narrow map: 32-pixel tiles
    nv, ntiles, _, _ = _tiling(conv_problem((1, 128, 56, 56), (128, 128, 3, 3), 2, 1), 2)
    assert (nv, ntiles) == (4, -(-(27 * 29 + 28) // 64))  # stride phases of 29 columns


def test_sparse_chunk_pointers(rng):
    from fastconv import sparse as fs
    w = rng.standard_normal((6, 7, 3, 3)).astype(np.float32)
    w[rng.random(w.shape) < 0.6] = 0
    csr = fs.csr_conv(w, (1, 1), 1)
    cptr = fs._chunk_pointers(csr, 6, 7, 3)
    assert cptr.shape == (6, 4)
    for k in range(6):
        assert cptr[k, 0] == csr[0][k] and cptr[k, -1] == csr[0][k + 1]
        for j in range(3):
            ch = csr[1][cptr[k, j]:cptr[k, j + 1]]
            assert ((ch >= 3 * j) & (ch < 3 * j + 3)).all()
    from fastconv.functional import conv_problem
    assert fs._chunk(conv_problem((1, 64, 56, 56), (64, 64, 3, 3), 1, 1), 4) == 16384 // (
        4 * (64 + 2 * 58 + 2))
    assert fs._chunk(conv_problem((1, 8, 5, 5), (8, 8, 1, 1)), 2) == 8  # all channels


def test_sparse_conv_offsets_too_large():
    from fastconv import sparse as fs
    from fastconv.functional import conv_problem
    csr = fs.csr_conv(np.ones((1, 2 ** 16, 1, 1), np.float32), (1, 1), 1)
    prob = conv_problem((1, 2 ** 16, 2 ** 8, 2 ** 7), (1, 2 ** 16, 1, 1))
    with pytest.raises(ValueError, match="layerX: the sparse kernel addresses"):
        fs._tap_offsets(csr, prob, None, "layerX")


def test_sparse_linear_matches_dense(rng):
    x = rng.standard_normal((5, 3, 40)).astype(np.float32)
    w = rng.standard_normal((17, 40)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    b = rng.standard_normal(17).astype(np.float32)
    y = fc.sparse_linear(x, w, b, activation="relu6")
    assert y.shape == (5, 3, 17)
    assert rel_err(y, np.clip(x @ w.T + b, 0, 6)) < 1e-5


@pytest.fixture(scope="module")
def data():
    return digits.load_data()


def test_pruned_digits_cnn_accuracy(data):
    """The script's 90 %-pruned, fine-tuned weights: within one point of the float model."""
    x_test, y_test, _ = data
    base = digits.accuracy(fc.optimize(digits.build(digits.state()), x_test[:2]), x_test, y_test)
    pruned = fc.optimize(digits.build(digits.state(pruned=True)), x_test[:2])
    sp = fc.prune(pruned, amount=0, example_input=x_test[:1])  # weights already pruned
    rep = {r["layer"]: r for r in sp.prune_report}
    assert rep["conv3"]["sparsity"] > 0.85 and rep["conv4"]["sparsity"] > 0.85
    assert any(n.op == "sparse_conv" for n in sp.nodes)
    acc = digits.accuracy(sp, x_test, y_test)
    assert base - acc <= 1.0, (base, acc)
    assert acc == digits.accuracy(pruned, x_test, y_test)  # CSR == dense with zeros
    assert "csr" in sp.explain(x_test[:1], repeat=1, roof_gflops=100.0)


def test_prune_scopes_and_crossover(rng):
    from fastconv.graph import Model, Node
    conv = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    nodes = [Node("conv", "big", ["x"], ["a"], conv,
                  {"weight": rng.standard_normal((64, 64, 3, 3)).astype(np.float32)}),
             Node("conv", "small", ["a"], ["y"], conv,
                  {"weight": (0.01 * rng.standard_normal((64, 64, 3, 3))).astype(np.float32)})]
    m = Model(nodes, ["x"], ["y"])
    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    dense_out = m(x)
    p = fc.prune(m, amount=0.9, example_input=x)
    rep = {r["layer"]: r for r in p.prune_report}
    assert all(abs(r["sparsity"] - 0.9) < 0.01 for r in rep.values())
    assert all(r["kernel"] == "csr" for r in rep.values())  # 90 %: modelled faster
    assert rel_err(p(x), _dense_equivalent(p, x)) < 1e-5
    g = fc.prune(m, amount=0.5, scope="global", example_input=x)
    rep = {r["layer"]: r for r in g.prune_report}
    assert rep["small"]["sparsity"] > 0.95 and rep["big"]["sparsity"] < 0.1  # one threshold
    low = fc.prune(m, amount=0.2, example_input=x)
    assert all(r["kernel"] == "dense" for r in low.prune_report)  # 20 %: dense stays faster
    np.testing.assert_array_equal(m(x), dense_out)  # the source model is untouched


def _dense_equivalent(model, x):
    from fastconv.graph import Model
    nodes = [n.copy() for n in model.nodes]
    for n in nodes:
        if n.op == "sparse_conv":
            n.op = "conv"
    return Model(nodes, model.inputs, model.outputs)(x)


def test_prune_errors(rng):
    from fastconv.graph import Model, Node
    m = Model([Node("relu", "r", ["x"], ["y"])], ["x"], ["y"])
    x = np.zeros((1, 2, 4, 4), np.float32)
    with pytest.raises(ValueError, match="amount must be a fraction in"):
        fc.prune(m, amount=1.0, example_input=x)
    with pytest.raises(ValueError, match="amount must be a fraction in"):
        fc.prune(m, amount=-0.1, example_input=x)
    with pytest.raises(ValueError, match="method must be 'magnitude'"):
        fc.prune(m, method="random", example_input=x)
    with pytest.raises(ValueError, match="scope must be"):
        fc.prune(m, scope="channel", example_input=x)
    with pytest.raises(ValueError, match="no convolution or linear layer"):
        fc.prune(m, example_input=x)
    with pytest.raises(TypeError, match="fastconv Model"):
        fc.prune("model")


def test_sparse_strided_pointwise_reads_the_subsampled_input(rng):
    from fastconv import sparse as fs
    from fastconv.functional import conv_problem
    x = rng.standard_normal((2, 6, 13, 10)).astype(np.float32)
    wt = rng.standard_normal((5, 6, 1, 1)).astype(np.float32)
    wt[rng.random(wt.shape) < 0.5] = 0
    eq, _ = fs._strided_pointwise(conv_problem(x.shape, wt.shape, (2, 3), 0))
    assert eq.stride == (1, 1) and (eq.h, eq.w) == (7, 4)
    assert fs._strided_pointwise(conv_problem(x.shape, wt.shape, 2, 1))[0] is None  # padded
    pk = {}
    for _ in range(2):  # the offsets cached in pk are the subsampled problem's
        y = fc.sparse_conv2d(x, wt, None, (2, 3), 0, packed=pk)
        assert rel_err(y, ref.conv2d(x, wt, None, (2, 3), 0)) < 1e-5
