"""Pruning: CSR kernels against the reference, fc.prune, and the pruned digits CNN."""
import digits
import numpy as np
import pytest
from conftest import rel_err
from fastconv.kernels import reference as ref
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc
from fastconv import planner


@pytest.fixture
def zen4_rates():
    """Plan with Zen 4's rates (planner.RATES "avx512") on any AVX-512 machine.

    Which layers fc.prune switches is the cost model's call, and on small layers it is
    close: with Zen 4's rates the digits CNN's conv4 (93 % zeros) is modelled a hair
    faster on CSR at batch 1; with Zen 5's the dense kernels run twice as fast and no layer
    of it is (measured there: conv4 16 us dense, 41 on CSR).  Tests that follow the
    sparse kernels through a model plan with the Zen 4 table, so they run those kernels on
    every machine."""
    before = planner.use_rates("avx512") if planner.VECTOR_LANES == 16 else None
    yield
    if before is not None:
        planner.use_rates(before)


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


@pytest.mark.parametrize("block", [1, 4])
def test_sparse_conv_trims_taps_that_read_padding_only(rng, block):
    """One pruned layer (weight and packed dict) on a 1x1 map, where only the centre tap
    reads the input, then on a 6x6 map and again on 1x1: each equal to the reference,
    the trimmed weight's CSR kept apart from the whole one's."""
    wt = rng.standard_normal((16, 8, 3, 3)).astype(np.float32)
    wt[rng.random(wt.shape) < 0.7] = 0
    b = rng.standard_normal(16).astype(np.float32)
    packed = {}
    for hw in (1, 6, 1):
        x = rng.standard_normal((2, 8, hw, hw)).astype(np.float32)
        y = fc.sparse_conv2d(x, wt, b, 1, 1, packed=packed, block=block, activation="relu")
        assert rel_err(y, np.maximum(ref.conv2d(x, wt, b, 1, 1), 0)) < 1e-5
    key = "csr" if block == 1 else "bsr4"
    assert key in packed and key in packed[("trimmed", (1, 2, 1, 2))]


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


@pytest.mark.parametrize("kb", [1, 4])
@pytest.mark.parametrize("nv", [1, 2, 4])
@pytest.mark.parametrize("stride,pad", [(1, 1), (1, 0), (2, 1), ((1, 3), 2)])
def test_sparse_tile_kernel_every_blocking(kb, nv, stride, pad, rng):
    """The kernel itself under every tile width, tile grouping, channel split and block
    size the planner could pick (and some it would not), on a padded grid, on y's own
    layout (1x1 below) and on stride phases; 9 output channels, so the last 4-channel
    block is partial."""
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
    csr = fs.csr_conv(wt, prob.dilation, 1, kb)
    rows = len(csr[0]) - 1
    xs = fs._phase_planes(prob, x).copy()
    offs = fs._tap_offsets(csr, prob, None, "t", kb)
    no_res = np.zeros((1, 1, 1, 1), np.float32)
    for tgroup, kblock, chunk, pf in ((1, 9, 5, 0), (3, 2, 2, 1), (100, 1, 1, 40),
                                      (2, 100, 3, 10 ** 6)):
        y = np.full(e.shape, np.nan, np.float32)
        line = np.empty((4, min(kblock, rows) * kb * 16 * nv), np.float32)
        cptr = fs._chunk_pointers(csr, rows, 5, chunk)
        run = ks.sparse_conv2d_tiles if kb == 1 else ks.block_conv2d_tiles
        run(xs, cptr, offs, csr[4], b, y, 1, no_res, False, nv, tgroup, kblock, line, pf)
        assert rel_err(y, e) < 1e-5, (tgroup, kblock, chunk, pf)


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
    big = conv_problem((1, 256, 56, 56), (64, 256, 1, 1))
    assert fs._chunk(big, 4) == 16384 // (4 * 64)  # 64 of 256 channels fit
    assert fs._chunk(big, 4, 4) == 256  # 4-channel blocks: four times the bytes
    assert fs._chunk(big, 4, 1, 128.0) == 64  # dense enough: 32 values per row per chunk
    assert fs._chunk(big, 4, 1, 51.2) == 160  # sparser: fewer, larger chunks
    assert fs._chunk(big, 4, 1, 25.6) == 256  # (at most all of them)


def test_sparse_conv_offsets_too_large():
    from fastconv import sparse as fs
    from fastconv.functional import conv_problem
    csr = fs.csr_conv(np.ones((1, 2 ** 16, 1, 1), np.float32), (1, 1), 1)
    prob = conv_problem((1, 2 ** 16, 2 ** 8, 2 ** 7), (1, 2 ** 16, 1, 1))
    with pytest.raises(ValueError, match="layerX: the sparse kernel addresses"):
        fs._tap_offsets(csr, prob, None, "layerX", 1)


def test_sparse_linear_matches_dense(rng):
    x = rng.standard_normal((5, 3, 40)).astype(np.float32)
    w = rng.standard_normal((17, 40)).astype(np.float32)
    w[rng.random(w.shape) < 0.8] = 0
    b = rng.standard_normal(17).astype(np.float32)
    y = fc.sparse_linear(x, w, b, activation="relu6")
    assert y.shape == (5, 3, 17)
    assert rel_err(y, np.clip(x @ w.T + b, 0, 6)) < 1e-5


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 5), f=st.integers(1, 70), o=st.integers(0, 9),
       density=st.sampled_from([0.0, 0.1, 0.5, 1.0]), act=st.sampled_from(["relu", "relu6", None]),
       seed=st.integers(0, 99))
def test_sparse_linear_gather_kernel_matches_reference(n, f, o, density, act, seed):
    """The few-sample kernel on its own: row lengths around the vector width (its masked
    last step), empty rows, no samples, no outputs."""
    from fastconv import sparse as fs
    from fastconv.kernels.cpu import sparse as ks
    r = np.random.default_rng(seed)
    x = r.standard_normal((n, f)).astype(np.float32)
    w = r.standard_normal((o, f)).astype(np.float32)
    w[r.random(w.shape) >= density] = 0
    b = r.standard_normal(o).astype(np.float32)
    y = np.full((n, o), np.nan, np.float32)
    ks.sparse_linear_rows(x, *fs._linear_csr(w, None), b, y,
                          {None: 0, "relu": 1, "relu6": 2}[act])
    assert rel_err(y, ref.activation(ref.linear(x, w, b), act)) < 1e-5


@pytest.mark.parametrize("path", ["gather", "conv"])
@pytest.mark.parametrize("shape", [(5, 3, 40), (1, 40), (40,), (0, 40), (37, 40)])
def test_sparse_linear_paths(rng, path, shape):
    """Both ways sparse_linear runs (chosen per sample count, here forced through the cache
    it keeps them in) equal the dense product, with bias, activation and leading
    dimensions; the conv path runs zeros in 4-row blocks on the block kernel; the caller's
    arrays are not modified."""
    x = rng.standard_normal(shape).astype(np.float32)
    for blocks in (False, True):
        w = rng.standard_normal((24, 40)).astype(np.float32)
        if blocks:
            w *= np.repeat(rng.random((6, 40)) < 0.2, 4, axis=0)
        else:
            w[rng.random(w.shape) < 0.8] = 0
        b = rng.standard_normal(24).astype(np.float32)
        x0, w0 = x.copy(), w.copy()
        samples = int(np.prod(shape[:-1]))
        packed = {("linear_path", samples): path}
        for _ in range(2):  # built, then from the cache
            y = fc.sparse_linear(x, w, b, activation="relu", packed=packed)
            assert y.shape == shape[:-1] + (24,)
            assert rel_err(y, np.maximum(x @ w.T + b, 0)) < 1e-5
        np.testing.assert_array_equal(x, x0)
        np.testing.assert_array_equal(w, w0)
        if path == "conv" and samples:
            assert packed["conv"]["csr_block"] == (4 if blocks else 1)


def test_sparse_linear_path_and_prune_choice(rng):
    """Per sample count the cheaper way is modelled: gathers for one sample, the 1x1 conv
    for many; fc.prune switches a classifier at 90 % (a tenth of the weight bytes to
    read), not at 30 %."""
    from fastconv import sparse as fs
    from fastconv.graph import Model, Node
    w = rng.standard_normal((512, 1024)).astype(np.float32)
    w90 = np.where(np.abs(w) > np.quantile(np.abs(w), 0.9), w, 0).astype(np.float32)
    one, many = fs.linear_costs(w90, 1, 2), fs.linear_costs(w90, 256, 2)
    assert one["gather"] < one["conv"] and many["conv"] < many["gather"]
    assert one["gather"] < fs.dense_linear_cost(w90, 1, 2)
    packed = {}
    x = rng.standard_normal((1, 1024)).astype(np.float32)
    fc.sparse_linear(x, w90, packed=packed)
    assert packed[("linear_path", 1)] == min(one, key=one.get)
    assert fc.sparse_linear(x[:0], w90).shape == (0, 512)  # no samples: nothing to plan
    m = Model([Node("linear", "fc", ["x"], ["y"], {}, {"weight": w})], ["x"], ["y"])
    kernels = {a: fc.prune(m, amount=a, example_input=x).prune_report[0]["kernel"]
               for a in (0.3, 0.9)}
    assert kernels == {0.3: "dense", 0.9: "csr"}
    p = fc.prune(m, amount=0.9, example_input=x)
    assert rel_err(p(x), x @ p.nodes[0].params["weight"].T) < 1e-5


@pytest.fixture(scope="module")
def data():
    return digits.load_data()


def test_pruned_digits_cnn_accuracy(data, zen4_rates):
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


def test_block_pruned_digits_cnn_accuracy(data, zen4_rates):
    """The script's weights pruned to 90 % in blocks of 4 output channels and fine-tuned:
    within one point of the float model; every layer fc.prune switches runs the block
    kernel, and the result is the dense model's with those zeros."""
    x_test, y_test, _ = data
    base = digits.accuracy(fc.optimize(digits.build(digits.state()), x_test[:2]), x_test, y_test)
    pruned = fc.optimize(digits.build(digits.state(pruned="block4")), x_test[:2])
    for n in pruned.nodes:
        if n.op == "conv":
            w = n.params["weight"]
            blocks = (w != 0).reshape(w.shape[0] // 4, 4, -1)
            assert (blocks.all(1) | ~blocks.any(1)).all(), n.name  # zeros in whole blocks
    sp = fc.prune(pruned, amount=0, example_input=x_test[:1])
    rep = {r["layer"]: r for r in sp.prune_report}
    assert rep["conv3"]["sparsity"] > 0.85 and rep["conv4"]["sparsity"] > 0.85
    convs = [n for n in sp.nodes if n.op == "sparse_conv"]
    assert convs and all(n.attrs["block"] == 4 for n in convs)
    assert all(rep[n.name]["kernel"] == "bsr4" for n in convs)
    acc = digits.accuracy(sp, x_test, y_test)
    assert base - acc <= 1.0, (base, acc)
    assert acc == digits.accuracy(pruned, x_test, y_test)
    assert "bsr4" in sp.explain(x_test[:1], repeat=1, roof_gflops=100.0)


def test_filter_pruned_digits_cnn_accuracy(data, zen4_rates):
    """The script's weights pruned to 70 % in blocks of 4 output channels x whole 3x3
    filters and fine-tuned: within one point of the float model, the zeros in whole
    filter blocks, and each pruned 3x3 conv on the test images' activations the same
    through the sparse Winograd kernel (both tile sizes) as dense."""
    from fastconv.graph import Model
    x_test, y_test, _ = data
    base = digits.accuracy(fc.optimize(digits.build(digits.state()), x_test[:2]), x_test, y_test)
    pruned = fc.optimize(digits.build(digits.state(pruned="filters4")), x_test[:2])
    acc = digits.accuracy(pruned, x_test, y_test)
    assert base - acc <= 1.0, (base, acc)
    weights = [n.params["weight"] for n in pruned.nodes if n.op in ("conv", "linear")]
    zeros = sum(int(np.count_nonzero(w == 0)) for w in weights)
    assert abs(zeros / sum(w.size for w in weights) - 0.7) < 0.01
    sp = fc.prune(pruned, amount=0, example_input=x_test[:1])
    assert {r["layer"] for r in sp.prune_report} >= {"conv2", "conv3", "conv4"}
    assert digits.accuracy(sp, x_test, y_test) == acc
    x = x_test[:64].astype(np.float32) / 16
    checked = 0
    for n in pruned.nodes:
        if n.op != "conv" or n.params["weight"].shape[2:] != (3, 3):
            continue
        w = n.params["weight"]
        k, c = w.shape[:2]
        nz = np.zeros((-(-k // 4) * 4, c, 9), bool)
        nz[:k] = (w != 0).reshape(k, c, 9)
        nz = nz.reshape(-1, 4, c, 9)
        assert (nz.any(axis=3).all(axis=1) | ~nz.any(axis=(1, 3))).all(), n.name
        xin = Model(pruned.nodes, pruned.inputs, [n.inputs[0]])(x)
        a = n.attrs
        dense = fc.conv2d(xin, w, n.params.get("bias"), a["stride"], tuple(a["pads"]))
        for m in (2, 4):
            y = fc.sparse_conv2d(xin, w, n.params.get("bias"), a["stride"], tuple(a["pads"]),
                                 winograd=m)
            assert rel_err(y, dense) < 5e-5, (n.name, m)
        checked += 1
    assert checked == 4


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


# -- block sparsity (4 output channels per block) --------------------------------------------------

def _block_pruned(rng, shape, density, kb=4):
    """A weight whose zeros come in blocks of kb consecutive output channels at one tap,
    with a few zeros inside kept blocks too."""
    k = shape[0]
    w = rng.standard_normal(shape).astype(np.float32)
    keep = rng.random((-(-k // kb), int(np.prod(shape[1:])))) < density
    w *= np.repeat(keep, kb, axis=0)[:k].reshape(shape)
    w[rng.random(shape) < 0.05] = 0
    return w


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([0, 1, 3]), g=st.integers(1, 2), cg=st.integers(1, 6),
       kg=st.sampled_from([4, 8, 12]), h=st.integers(1, 10), w=st.integers(1, 10),
       r=st.integers(1, 3), stride=st.integers(1, 2), pad=st.integers(0, 2),
       dil=st.integers(1, 2), density=st.sampled_from([0.0, 0.2, 0.6, 1.0]),
       act=st.sampled_from([None, "relu", "hardswish"]), use_res=st.booleans(),
       seed=st.integers(0, 99))
def test_block_sparse_conv_matches_reference(n, g, cg, kg, h, w, r, stride, pad, dil, density,
                                             act, use_res, seed):
    rng = np.random.default_rng(seed)
    if h + 2 * pad < dil * (r - 1) + 1 or w + 2 * pad < dil * (r - 1) + 1:
        return
    x = rng.standard_normal((n, g * cg, h, w)).astype(np.float32)
    wt = _block_pruned(rng, (g * kg, cg, r, r), density)
    b = rng.standard_normal(g * kg).astype(np.float32)
    e = ref.conv2d(x, wt, b, stride, pad, dil, g)
    res = rng.standard_normal(e.shape).astype(np.float32) if use_res else None
    x0 = x.copy()
    y = fc.sparse_conv2d(x, wt, b, stride, pad, dil, g, activation=act, residual=res, block=4)
    e = e + (res if use_res else 0)
    e = {None: e, "relu": np.maximum(e, 0), "hardswish": e * np.clip(e + 3, 0, 6) / 6}[act]
    assert y.shape == e.shape
    assert rel_err(y, e) < 1e-5
    np.testing.assert_array_equal(x, x0)


@pytest.mark.parametrize("block", [1, 4])
def test_sparse_conv_prefetching_inputs(block, rng, monkeypatch):
    """Inputs past planner.STREAMED_BYTES run the tiled kernels with prefetches (made to
    apply to every input here): the same results on every geometry, stride phases,
    dilation, padding and maps whose tiles end inside a prefetched run."""
    from fastconv import planner, sparse as fs
    monkeypatch.setattr(planner, "STREAMED_BYTES", 0)
    seen = []
    real = fs._prefetch_distance
    monkeypatch.setattr(fs, "_prefetch_distance", lambda *a: seen.append(real(*a)) or seen[-1])
    for n, c, k, h, w, r, stride, pad, dil in ((2, 9, 8, 40, 37, 1, 1, 0, 1),
                                               (3, 6, 12, 23, 30, 3, 1, 1, 1),
                                               (2, 5, 4, 31, 29, 3, 2, 1, 1),
                                               (1, 7, 8, 26, 26, 3, 1, 2, 2),
                                               (2, 8, 16, 30, 30, 1, 2, 0, 1)):
        x = rng.standard_normal((n, c, h, w)).astype(np.float32)
        wt = _block_pruned(rng, (k, c, r, r), 0.3) if block == 4 else \
            rng.standard_normal((k, c, r, r)).astype(np.float32) * (rng.random((k, c, r, r)) < 0.3)
        b = rng.standard_normal(k).astype(np.float32)
        e = np.maximum(ref.conv2d(x, wt, b, stride, pad, dil), 0)
        x0 = x.copy()
        y = fc.sparse_conv2d(x, wt, b, stride, pad, dil, activation="relu", block=block,
                             winograd=False)
        assert rel_err(y, e) < 1e-5, (n, c, k, h, w, r, stride, pad, dil)
        np.testing.assert_array_equal(x, x0)
    assert len(seen) == 5 and all(pf > 0 for pf in seen)


@pytest.mark.parametrize("k", [1, 3, 5, 6, 7, 13, 64])
def test_block_sparse_conv_any_output_count(k, rng):
    """K not a multiple of 4: the last block's missing channels are neither read nor
    written (NaN canaries around y stay)."""
    x = rng.standard_normal((2, 7, 9, 11)).astype(np.float32)
    for r, pad, stride in ((3, 1, 1), (1, 0, 1), (3, 1, 2)):
        wt = _block_pruned(rng, (k, 7, r, r), 0.5)
        b = rng.standard_normal(k).astype(np.float32)
        e = np.maximum(ref.conv2d(x, wt, b, stride, pad), 0)
        buf = np.full((2 * e.size + 64,), np.nan, np.float32)
        out = buf[32:32 + e.size].reshape(e.shape)
        y = fc.sparse_conv2d(x, wt, b, stride, pad, activation="relu", out=out, block=4)
        assert y is out or np.shares_memory(y, out)
        assert rel_err(out, e) < 1e-5
        assert np.isnan(buf[:32]).all() and np.isnan(buf[32 + e.size:]).all()


def test_block_csr_layout(rng):
    """csr_conv with 4-channel blocks: one block per (row, tap) with any nonzero, its four
    values the channels' weights (zeros past K), columns as CSR's; rebuilding the dense
    weight from either form gives the weight back."""
    from fastconv import sparse as fs
    for groups, shape in ((1, (10, 6, 3, 3)), (2, (8, 3, 3, 3)), (3, (12, 2, 1, 1))):
        w = _block_pruned(rng, shape, 0.4)
        k, cg, r, s = shape
        for kb in (1, 4):
            indptr, chan, roff, coff, vals = fs.csr_conv(w, (1, 1), groups, kb)
            assert len(indptr) == -(-k // kb) + 1 and len(vals) == kb * indptr[-1]
            back = np.zeros((-(-k // kb) * kb, groups * cg, r, s), np.float32)
            for row in range(len(indptr) - 1):
                for i in range(indptr[row], indptr[row + 1]):
                    back[row * kb:row * kb + kb, chan[i], roff[i], coff[i]] = \
                        vals[kb * i:kb * i + kb]
                assert (np.diff(chan[indptr[row]:indptr[row + 1]]) >= 0).all()  # by channel
            dense = np.zeros((k, groups * cg, r, s), np.float32)
            for gi in range(groups):
                kg = k // groups
                dense[gi * kg:(gi + 1) * kg, gi * cg:(gi + 1) * cg] = w[gi * kg:(gi + 1) * kg]
            np.testing.assert_array_equal(back[:k], dense)
            assert not back[k:].any()
        nnz, blocks = fs.block_counts(w, groups, 4)
        assert nnz == np.count_nonzero(w) and blocks == fs.csr_conv(w, (1, 1), groups, 4)[0][-1]
    assert fs.block_counts(np.ones((6, 2, 3, 3), np.float32), 2, 4)[1] is None  # 3 per group


def test_block_size_chosen_from_the_zero_pattern(rng):
    """block=None: 4-channel blocks for a block-pruned weight, CSR for scattered zeros,
    each cached in packed; both give the same result."""
    x = rng.standard_normal((1, 32, 14, 14)).astype(np.float32)
    blocky = _block_pruned(rng, (32, 32, 3, 3), 0.2)
    scattered = rng.standard_normal((32, 32, 3, 3)).astype(np.float32)
    scattered[rng.random(scattered.shape) < 0.9] = 0
    for wt, kb in ((blocky, 4), (scattered, 1)):
        pk = {}
        y = fc.sparse_conv2d(x, wt, None, 1, 1, packed=pk)
        assert pk["csr_block"] == kb
        assert ("bsr4" in pk) == (kb == 4)
        other = fc.sparse_conv2d(x, wt, None, 1, 1, block=5 - kb if kb == 4 else 4)
        assert rel_err(y, other) < 1e-5
        assert rel_err(y, ref.conv2d(x, wt, None, 1, 1)) < 1e-5
    grouped = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)  # 3 outputs per group
    pk = {}
    fc.sparse_conv2d(rng.standard_normal((1, 8, 5, 5)).astype(np.float32), grouped, None, 1, 1,
                     groups=2, packed=pk)
    assert pk["csr_block"] == 1


def test_block_sparse_errors(rng):
    x = rng.standard_normal((1, 8, 5, 5)).astype(np.float32)
    wt = rng.standard_normal((6, 4, 3, 3)).astype(np.float32)
    with pytest.raises(ValueError, match=r"convX: block must be one of \(1, 4\)"):
        fc.sparse_conv2d(x, wt, None, 1, 1, groups=2, block=3, layer="convX")
    with pytest.raises(ValueError, match="convX: block must be one of"):
        fc.sparse_conv2d(x, wt, None, 1, 1, groups=2, block=True, layer="convX")
    with pytest.raises(ValueError, match=r"convX: block=4 needs each group's output channels "
                                         r"\(3\) to be a multiple of 4"):
        fc.sparse_conv2d(x, wt, None, 1, 1, groups=2, block=4, layer="convX")
    from fastconv.graph import Model, Node
    m = Model([Node("conv", "c", ["x"], ["y"], dict(stride=(1, 1), pads=(1, 1, 1, 1),
                                                     dilation=(1, 1), groups=1),
                    {"weight": rng.standard_normal((8, 8, 3, 3)).astype(np.float32)})],
              ["x"], ["y"])
    with pytest.raises(ValueError, match=r"prune: block must be one of \(1, 4\)"):
        fc.prune(m, amount=0.5, example_input=x, block=2)


def test_prune_in_blocks(rng, tmp_path):
    """block=4: every zeroed weight's block (4 output channels at one tap) is all zero, the
    sparsity is the amount, the layers run the block kernel, the result equals the dense
    conv with those zeros, and the choice survives save/load; linear layers are pruned in
    blocks of 4 output features, a grouped conv with 3 outputs per group unstructured."""
    from fastconv.graph import Model, Node
    conv = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    nodes = [Node("conv", "a", ["x"], ["h1"], dict(conv, activation="relu"),
                  {"weight": rng.standard_normal((64, 64, 3, 3)).astype(np.float32),
                   "bias": rng.standard_normal(64).astype(np.float32)}),
             Node("conv", "b", ["h1"], ["h2"], conv,
                  {"weight": rng.standard_normal((66, 64, 3, 3)).astype(np.float32)}),
             Node("conv", "g", ["h2"], ["h3"], dict(conv, groups=22),
                  {"weight": rng.standard_normal((66, 3, 3, 3)).astype(np.float32)}),
             Node("global_avg_pool", "p", ["h3"], ["h4"]),
             Node("flatten", "f", ["h4"], ["h5"], {"axis": 1}),
             Node("linear", "fc", ["h5"], ["y"], {},
                  {"weight": rng.standard_normal((10, 66)).astype(np.float32)})]
    m = Model(nodes, ["x"], ["y"])
    x = rng.standard_normal((1, 64, 28, 28)).astype(np.float32)
    for scope in ("layer", "global"):
        p = fc.prune(m, amount=0.8, example_input=x, block=4, scope=scope)
        rep = {r["layer"]: r for r in p.prune_report}
        nodes = {n.name: n for n in p.nodes}
        for name in ("a", "b", "fc"):
            w = nodes[name].params["weight"]
            k = w.shape[0]
            some = np.zeros((-(-k // 4) * 4,) + w.shape[1:], bool)
            some[:k] = w != 0
            every = np.ones_like(some)  # the last block's missing channels count as both
            every[:k] = w != 0
            some, every = (a.reshape(-1, 4, *w.shape[1:]) for a in (some, every))
            assert (every.all(1) | ~some.any(1)).all(), name  # whole blocks or none
            assert rep[name]["block"] == 4
        assert rep["g"]["block"] == 1
        if scope == "layer":
            assert all(abs(r["sparsity"] - 0.8) < 0.02 for r in rep.values())
            assert rep["a"]["kernel"] == rep["b"]["kernel"] == "bsr4"
            assert nodes["a"].attrs["block"] == 4
        assert rel_err(p(x), _dense_equivalent(p, x)) < 1e-5
    text = p.explain(x, repeat=1, roof_gflops=100.0)
    assert "bsr4" in text
    path = tmp_path / "m.fcm"
    p.save(path)
    q = fc.load(path)
    assert [n.attrs.get("block") for n in q.nodes] == [n.attrs.get("block") for n in p.nodes]
    np.testing.assert_array_equal(q(x), p(x))


def test_block_pruning_keeps_the_largest_blocks():
    from fastconv import sparse as fs
    w = np.zeros((8, 1, 1, 2), np.float32)
    w[0:4, 0, 0, 0] = [3, 0, 0, 0]     # rms 1.5
    w[0:4, 0, 0, 1] = [1, 1, 1, 1]     # rms 1
    w[4:8, 0, 0, 0] = [2, 2, 2, 2]     # rms 2
    w[4:8, 0, 0, 1] = [0.1] * 4
    scores, count = fs._block_scores(w, 4)
    np.testing.assert_allclose(scores, [[1.5, 1.0], [2.0, 0.1]], rtol=1e-6)
    thr = fs._quantile([(scores, count)], 0.5)
    keep = fs._expand_blocks(scores > thr, w.shape, 4)
    assert keep[:, 0, 0, 0].all() and not keep[:, 0, 0, 1].any()
    s5, c5 = fs._block_scores(np.ones((5, 2, 1, 1), np.float32), 4)  # a partial last block
    assert list(c5) == [4, 1] and np.allclose(s5, 1)


def test_prune_then_optimize_fuses_into_the_sparse_convs(rng, zen4_rates):
    """Pruning an imported graph before optimize (the order for MobileNet-style models,
    whose 1x1 convs optimize would fuse into inverted-residual blocks): the BatchNorm
    folds into the sparse convs' weights (their zeros and blocks kept), ReLU6 and the
    residual add into their epilogues, the classifier's ReLU into the sparse linear,
    and the result is the unoptimized pruned model's."""
    from fastconv.graph import Model, Node
    one = dict(stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1), groups=1)

    def bn(k):
        return {"scale": rng.uniform(0.5, 2, k).astype(np.float32),
                "shift": rng.standard_normal(k).astype(np.float32)}
    nodes = [Node("conv", "expand", ["x"], ["e"], one,
                  {"weight": rng.standard_normal((64, 32, 1, 1)).astype(np.float32)}),
             Node("affine", "bn1", ["e"], ["eb"], {}, bn(64)),
             Node("clip", "relu6", ["eb"], ["er"], {"min": 0, "max": 6}),
             Node("conv", "project", ["er"], ["pj"], one,
                  {"weight": rng.standard_normal((32, 64, 1, 1)).astype(np.float32)}),
             Node("affine", "bn2", ["pj"], ["pb"], {}, bn(32)),
             Node("add", "res", ["pb", "x"], ["r"]),
             Node("global_avg_pool", "gap", ["r"], ["g"]),
             Node("flatten", "flat", ["g"], ["f"], {"start": 1, "end": -1}),
             Node("linear", "fc1", ["f"], ["h"], {},
                  {"weight": rng.standard_normal((40, 32)).astype(np.float32),
                   "bias": rng.standard_normal(40).astype(np.float32)}),
             Node("relu", "relu", ["h"], ["y"])]
    m = Model(nodes, ["x"], ["y"])
    x = rng.standard_normal((1, 32, 28, 28)).astype(np.float32)
    pruned = fc.prune(m, amount=0.9, example_input=x, block=4)
    assert {r["layer"]: r["kernel"] for r in pruned.prune_report} == {
        "expand": "bsr4", "project": "bsr4", "fc1": "csr"}
    opt = fc.optimize(pruned, x)
    ops = [n.op for n in opt.nodes]
    assert "affine" not in ops and "clip" not in ops and "add" not in ops and "relu" not in ops
    by = {n.name: n for n in opt.nodes}
    assert by["expand"].attrs["folded_bn"] and by["expand"].attrs["activation"] == "relu6"
    assert by["project"].attrs["folded_bn"] and len(by["project"].inputs) == 2
    assert by["fc1"].attrs["activation"] == "relu"
    for name in ("expand", "project"):
        w, w0 = by[name].params["weight"], {n.name: n for n in pruned.nodes}[name].params["weight"]
        np.testing.assert_array_equal(w != 0, w0 != 0)  # the same zeros, so the same blocks
    assert rel_err(opt(x), pruned(x)) < 1e-5
    assert "bsr4" in opt.explain(x, repeat=1, roof_gflops=100.0)


def _filter_pruned(rng, shape, density):
    """A weight whose zeros come in blocks of 4 output channels x one input channel's whole
    filter (fc.prune(..., block=4, whole_filters=True)), a few zeros inside kept blocks."""
    k, c = shape[:2]
    w = rng.standard_normal(shape).astype(np.float32)
    keep = rng.random((-(-k // 4), c)) < density
    w *= np.repeat(keep, 4, axis=0)[:k][:, :, None, None]
    w[rng.random(shape) < 0.05] = 0
    return w


@settings(max_examples=40, deadline=None)
@given(n=st.sampled_from([0, 1, 3]), c=st.integers(1, 9), k=st.integers(1, 11),
       h=st.integers(1, 13), w=st.integers(1, 13), pads=st.tuples(*[st.integers(0, 2)] * 4),
       m=st.sampled_from([2, 4]), density=st.sampled_from([0.0, 0.3, 1.0]),
       act=st.sampled_from([None, "relu", "relu6"]), use_res=st.booleans(),
       seed=st.integers(0, 99))
def test_sparse_winograd_matches_reference(n, c, k, h, w, pads, m, density, act, use_res, seed):
    """winograd=2 / 4: F(m x m) with the products over the stored filter blocks equals the
    reference conv on any map (edge tiles, asymmetric pads, channels not a multiple of 4,
    an empty batch), with bias, residual and activation; the caller's arrays unchanged and
    ``out`` written in place."""
    rng = np.random.default_rng(seed)
    pt, pb, pl, pr = pads
    if h + pt + pb < 3 or w + pl + pr < 3:
        return
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = _filter_pruned(rng, (k, c, 3, 3), density)
    b = rng.standard_normal(k).astype(np.float32)
    e = ref.conv2d(x, wt, b, 1, pads)
    res = rng.standard_normal(e.shape).astype(np.float32) if use_res else None
    e = e + (res if use_res else 0)
    e = np.clip(e, 0, 6 if act == "relu6" else None) if act else e
    copies = [a.copy() for a in (x, wt, b)]
    out = np.full(e.shape, np.nan, np.float32)
    packed = {}
    for _ in range(2):  # built, then from packed
        y = fc.sparse_conv2d(x, wt, b, 1, pads, activation=act, residual=res, winograd=m,
                             packed=packed, out=out)
        assert y is out and rel_err(y, e) < (1e-5 if m == 2 else 5e-5)
    for a, a0 in zip((x, wt, b), copies):
        np.testing.assert_array_equal(a, a0)


def test_sparse_winograd_blocks_are_the_dense_transform(rng):
    """winograd_blocks keeps the 4-channel blocks over input channels that hold a nonzero
    filter, in CSR order, each with its transformed filters G g G^T (the dense Winograd's);
    a weight with no nonzero stores no block and gives the bias."""
    from fastconv import sparse as fs
    wt = _filter_pruned(rng, (10, 7, 3, 3), 0.4)
    for m in (2, 4):
        indptr, chan, vals = fs.winograd_blocks(wt, m)
        mask = fs.filter_blocks(wt)
        assert mask.shape == (3, 7) and indptr[-1] == mask.sum() == len(chan)
        U = planner.REGISTRY[f"winograd_f{m}x{m}_3x3"].pack(wt)
        Up = np.zeros((U.shape[0], 12, 7), np.float32)
        Up[:, :10] = U
        for row in range(3):
            for i in range(indptr[row], indptr[row + 1]):
                assert mask[row, chan[i]]
                np.testing.assert_array_equal(vals[:, 4 * i:4 * i + 4],
                                              Up[:, 4 * row:4 * row + 4, chan[i]])
        assert vals.shape == (U.shape[0], 4 * len(chan))
    x = rng.standard_normal((1, 5, 9, 9)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    y = fc.sparse_conv2d(x, np.zeros((6, 5, 3, 3), np.float32), b, 1, 1, winograd=True)
    np.testing.assert_array_equal(y, np.broadcast_to(b[None, :, None, None], y.shape))


def test_sparse_winograd_chosen_from_the_zero_pattern(rng):
    """block=None, winograd=None: filter blocks at half density on a 56x56 map run the
    sparse Winograd kernel (modelled faster than block CSR's 9 taps a block), scattered
    zeros and tap blocks at 90 % do not; winograd=False never, and every choice gives
    the reference's result."""
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    cases = ((_filter_pruned(rng, (64, 64, 3, 3), 0.5), 4),
             (_block_pruned(rng, (64, 64, 3, 3), 0.1), 0))
    for wt, m in cases:
        e = ref.conv2d(x, wt, None, 1, 1)
        pk = {}
        y = fc.sparse_conv2d(x, wt, None, 1, 1, packed=pk)
        assert pk[("winograd", None)] == m
        assert (("winograd_bsr4", 4) in pk) == (m == 4)
        assert rel_err(y, e) < 5e-5
        pk = {}
        assert rel_err(fc.sparse_conv2d(x, wt, None, 1, 1, packed=pk, winograd=False), e) < 1e-5
        assert not any(isinstance(key, tuple) and key[0] == "winograd_bsr4" for key in pk)


def test_sparse_winograd_errors(rng):
    x = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    w3 = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    for kwargs, match in ((dict(winograd=3), "winograd must be None, True, False or a tile"),
                          (dict(winograd="yes"), "winograd must be None"),
                          (dict(winograd=True, block=1), "block=1 asks for CSR"),
                          (dict(winograd=True, stride=2), "needs a 3x3 kernel with stride 1"),
                          (dict(winograd=4, dilation=2), "needs a 3x3 kernel with stride 1"),
                          (dict(winograd=True, groups=2), "needs groups=1")):
        conv = dict(stride=1, padding=1, dilation=1, groups=1)
        conv.update({k: v for k, v in kwargs.items() if k in conv})
        extra = {k: v for k, v in kwargs.items() if k not in conv}
        wt = w3 if conv["groups"] == 1 else w3[:, :2]
        with pytest.raises(ValueError, match=match) as info:
            fc.sparse_conv2d(x, wt, None, layer="layer7", **conv, **extra)
        assert "layer7" in str(info.value)
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        fc.sparse_conv2d(x, w3[:, :, :1, :1], None, winograd=True)


def test_prune_whole_filters(rng, tmp_path):
    """whole_filters=True: every zeroed weight's block is 4 output channels x one input
    channel's whole filter, the amount holds per layer, the 3x3 stride-1 layers run the
    sparse Winograd kernel where it is modelled faster (report, explain, save/load), and
    the model equals the dense one with those zeros; 1x1 layers prune as with block=4."""
    from fastconv.graph import Model, Node
    conv = dict(stride=(1, 1), pads=(1, 1, 1, 1), dilation=(1, 1), groups=1)
    nodes = [Node("conv", "a", ["x"], ["h1"], dict(conv, activation="relu"),
                  {"weight": rng.standard_normal((64, 64, 3, 3)).astype(np.float32),
                   "bias": rng.standard_normal(64).astype(np.float32)}),
             Node("conv", "s", ["h1"], ["h2"], dict(conv, stride=(2, 2)),
                  {"weight": rng.standard_normal((64, 64, 3, 3)).astype(np.float32)}),
             Node("conv", "p", ["h2"], ["y"], dict(conv, pads=(0, 0, 0, 0)),
                  {"weight": rng.standard_normal((32, 64, 1, 1)).astype(np.float32)})]
    m = Model(nodes, ["x"], ["y"])
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    p = fc.prune(m, amount=0.5, example_input=x, block=4, whole_filters=True)
    rep = {r["layer"]: r for r in p.prune_report}
    by = {n.name: n for n in p.nodes}
    for name in ("a", "s"):
        w = by[name].params["weight"]
        nz = (w != 0).reshape(16, 4, 64, 9)
        assert (nz.any(axis=3).all(axis=1) | ~nz.any(axis=(1, 3))).all(), name
        assert abs(rep[name]["sparsity"] - 0.5) < 0.02
    assert abs(rep["p"]["sparsity"] - 0.5) < 0.02
    assert rep["a"]["kernel"] == "winograd4_bsr4" and by["a"].attrs["winograd"] == 4
    assert not rep["s"]["kernel"].startswith("winograd")   # stride 2: block CSR or dense
    assert rel_err(p(x), _dense_equivalent(p, x)) < 5e-5
    assert "winograd4_bsr4" in p.explain(x, repeat=1, roof_gflops=100.0)
    path = tmp_path / "m.fcm"
    p.save(path)
    np.testing.assert_array_equal(fc.load(path)(x), p(x))
    tap = fc.prune(m, amount=0.5, example_input=x, block=4)
    np.testing.assert_array_equal(tap.nodes[2].params["weight"], p.nodes[2].params["weight"])
    with pytest.raises(ValueError, match="whole_filters=True prunes blocks of 4"):
        fc.prune(m, amount=0.5, example_input=x, whole_filters=True)
    with pytest.raises(ValueError, match="whole_filters must be True or False"):
        fc.prune(m, amount=0.5, example_input=x, block=4, whole_filters=1)
