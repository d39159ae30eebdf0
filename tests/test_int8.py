"""int8 kernels against the integer reference: bit for bit, saturation included."""
import numpy as np
import pytest
from fastconv.kernels import reference as ref
from fastconv.kernels.cpu import vnni
from hypothesis import given, settings
from hypothesis import strategies as st

import fastconv as fc


@pytest.fixture(params=["vnni", "portable"] if vnni.HAS_VNNI else ["portable"])
def kernel_path(request, monkeypatch):
    """Run a test through the VNNI kernels (where the CPU has them) and the portable ones."""
    if request.param == "portable":
        monkeypatch.setattr(vnni, "HAS_VNNI", False)
    return request.param


@settings(max_examples=40, deadline=None)
@given(m=st.integers(1, 13), k=st.integers(1, 70), n=st.integers(1, 11),
       ua=st.booleans(), ub=st.booleans(), seed=st.integers(0, 1000))
def test_int8_gemm_is_exact(m, k, n, ua, ub, seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8) if ua else \
        rng.integers(-128, 128, (m, k)).astype(np.int8)
    b = rng.integers(0, 256, (k, n)).astype(np.uint8) if ub else \
        rng.integers(-128, 128, (k, n)).astype(np.int8)
    c = fc.int8_gemm(a, b)
    assert c.dtype == np.int32
    np.testing.assert_array_equal(c, ref.int8_gemm(a, b))


@pytest.mark.parametrize("m, k, n", [(4, 64, 4), (9, 130, 7), (33, 1, 5), (16, 300, 16),
                                     # 32-column pairs of weight blocks: exact pair, pair +
                                     # a lone block, a partial second block; several 512-byte
                                     # reduction chunks
                                     (9, 1100, 32), (17, 70, 48), (8, 2050, 40), (3, 5, 80),
                                     (40, 256, 100)])  # whole 8 x 32 blocks stored in place
def test_int8_gemm_both_paths(kernel_path, rng, m, k, n):
    for adt in (np.int8, np.uint8):
        a = rng.integers(np.iinfo(adt).min, np.iinfo(adt).max + 1, (m, k)).astype(adt)
        b = rng.integers(-128, 128, (k, n)).astype(np.int8)
        np.testing.assert_array_equal(fc.int8_gemm(a, b), ref.int8_gemm(a, b))


@pytest.mark.skipif(not vnni.HAS_VNNI, reason="the VNNI GEMM's blocking")
@pytest.mark.parametrize("kc, group, band", [(64, 1, 1), (128, 2, 1), (1024, 8, 16),
                                             (64, 3, 2)])
@pytest.mark.parametrize("m, k, n", [(8, 260, 64), (41, 300, 100), (24, 129, 33),
                                     (1, 200, 96), (130, 64, 40)])
def test_int8_gemm_blocking(rng, monkeypatch, kc, group, band, m, k, n):
    """The VNNI GEMM's tasks (column pairs x row bands) and reduction chunks, forced small:
    whole 8 x 32 blocks stored with the column offset on the first chunk and added to on
    the others, partial blocks through the workspace, int8 a's shift correction in the
    accumulators' start; one packed dict serving both a types.  Exact."""
    from fastconv import quantization
    monkeypatch.setattr(quantization, "GEMM_KC", kc)
    monkeypatch.setattr(quantization, "GEMM_GROUP", group)
    monkeypatch.setattr(quantization, "GEMM_BAND", band)
    b = rng.integers(-128, 128, (k, n)).astype(np.int8)
    packed = {}
    for adt in (np.int8, np.uint8, np.int8):
        a = rng.integers(np.iinfo(adt).min, np.iinfo(adt).max + 1, (m, k)).astype(adt)
        np.testing.assert_array_equal(fc.int8_gemm(a, b, packed=packed), ref.int8_gemm(a, b))
    assert quantization._gemm_blocking(m, k, n, 2)[0] == kc


@pytest.mark.parametrize("m, k, n", [(5, 70, 33), (16, 128, 64)])
def test_int8_gemm_strided_b_and_cached_form(kernel_path, rng, m, k, n):
    """b given as a transposed view (a layer's (N, K) weight), and then, with its form
    cached, changed in place without a fresh dict: the cached form is what is used (the
    documented contract: a fresh dict whenever b changes)."""
    w = rng.integers(-128, 128, (n, k)).astype(np.int8)
    a = rng.integers(0, 256, (m, k)).astype(np.uint8)
    want = ref.int8_gemm(a, w.T)
    packed = {}
    np.testing.assert_array_equal(fc.int8_gemm(a, w.T, packed=packed), want)
    if kernel_path == "vnni":
        w[...] = 0   # the packed form stands for the old weights
        np.testing.assert_array_equal(fc.int8_gemm(a, w.T, packed=packed), want)
        np.testing.assert_array_equal(fc.int8_gemm(a, w.T, packed={}), np.zeros((m, n)))


def test_int8_gemm_blocking_rule():
    """Tasks of up to 8 column pairs x 16 row blocks, thinner where that leaves fewer than
    two a thread."""
    from fastconv.quantization import _gemm_blocking

    def tasks(m, n, threads):
        _, group, band = _gemm_blocking(m, 64, n, threads)
        return -(-(-(-n // 32)) // group) * -(-(-(-m // 8)) // band), group, band
    assert tasks(1024, 1024, 2) == (32, 8, 16)
    assert tasks(1, 1000, 2) == (4, 8, 1)       # a vector: column groups only
    assert tasks(4096, 64, 2) == (32, 2, 16)
    assert tasks(64, 64, 2)[0] >= 4             # thin: split until each thread has two
    assert tasks(8, 32, 2) == (1, 1, 1)         # one block: one task


def test_int8_gemm_extremes_do_not_overflow():
    k = 4096
    a = np.full((5, k), 255, np.uint8)
    b = np.full((k, 6), -128, np.int8)
    np.testing.assert_array_equal(fc.int8_gemm(a, b), np.full((5, 6), 255 * -128 * k))
    # the largest reduction, signed a: its shifted products and the column offset cancel
    # in modular int32 arithmetic
    k = fc.quantization.MAX_REDUCTION
    a = np.full((9, k), -128, np.int8)
    b = np.full((k, 33), -128, np.int8)
    b[::2, 0] = 127
    np.testing.assert_array_equal(fc.int8_gemm(a, b), ref.int8_gemm(a, b))


CONV_CASES = [  # N, C, H, W, K, R, S, stride, padding, dilation, groups
    (1, 3, 8, 8, 4, 3, 3, 1, 1, 1, 1),
    (2, 8, 11, 9, 12, 3, 3, (2, 1), (1, 2, 0, 1), 1, 2),
    (1, 16, 7, 7, 9, 1, 1, 1, 0, 1, 1),
    (1, 5, 9, 10, 7, 5, 5, 2, 2, 2, 1),
    (3, 6, 6, 6, 6, 3, 3, 1, 1, 1, 6),
    (1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1),
    (1, 64, 14, 14, 35, 3, 3, 1, 1, 1, 1),
    (1, 40, 9, 9, 40, 3, 3, 1, 1, 1, 2),     # Kg = 20: a 32-channel pair with a partial half
    (2, 96, 20, 19, 48, 1, 1, 1, 0, 1, 1),   # 1x1: many pixel tiles, three 16-channel blocks
    (1, 20, 17, 18, 8, 3, 3, 1, (2, 0, 1, 2), 1, 1),  # 16 x 16 layout moves with both tails
    (2, 48, 14, 14, 20, 1, 1, 1, 0, 1, 1),   # 1x1 read in place; 14-column rows regrouped
    (2, 12, 13, 11, 40, 3, 3, 2, 2, 2, 1),   # taps read in place under stride and dilation
    (1, 32, 9, 9, 48, 5, 3, (1, 2), (2, 1, 1, 0), (2, 1), 1),  # ... a 5x3 kernel, mixed
    (1, 16, 6, 6, 24, 1, 1, 2, 0, 1, 1),     # a strided 1x1 (not read as rows): one tap
    (2, 16, 7, 7, 40, 3, 3, 1, 1, 1, 1),     # 8-pixel blocks across 7-pixel rows
    (1, 8, 9, 5, 24, 5, 3, 1, (2, 2, 1, 1), 1, 1),  # ... 5-pixel rows, a 5x3 kernel
    (1, 32, 1, 1, 40, 3, 3, 1, 1, 1, 1),     # 1x1 map: the centre tap alone is run
    (2, 8, 2, 2, 16, 3, 3, 2, 1, 1, 1),      # stride 2 on 2x2: the top row and column cut
    (1, 12, 1, 4, 20, 3, 5, 1, (1, 1, 2, 2), 1, 1),  # one row: rows cut, columns kept
    # 1x1 stride 1 from NCHW planes (the pixel-vector kernel on VNNI): C not a multiple
    # of 4, K not a multiple of 8, a last vector of 3 pixels; one row of 37
    (3, 130, 9, 11, 70, 1, 1, 1, 0, 1, 1),
    (1, 5, 3, 37, 13, 1, 1, 1, 0, 1, 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=str)
@pytest.mark.parametrize("xdtype", ["int8", "uint8"])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_int8_conv_matches_the_integer_reference(kernel_path, rng, case, xdtype, activation):
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x = (2 * rng.standard_normal((n, c, h, w))).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    xq, sx, zx = fc.quantize_tensor(x, dtype=xdtype)
    wq, sw, _ = fc.quantize_tensor(wt, axis=0)
    kw = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
              activation=activation)
    y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, **kw)
    e = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, stride, padding, dilation, groups, activation)
    np.testing.assert_array_equal(y, e)
    for odt, zy in (("int8", -3), ("uint8", 7)):
        yq = fc.int8_conv2d(xq, sx, zx, wq, sw, b, out_scale=0.02, out_zero_point=zy,
                            out_dtype=odt, **kw)  # small scale: saturation happens
        eq = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, stride, padding, dilation, groups,
                             activation, out_scale=0.02, out_zero_point=zy,
                             out_dtype=np.dtype(odt).type)
        assert yq.dtype == np.dtype(odt)
        np.testing.assert_array_equal(yq, eq)
    # and the quantized result is close to the float convolution
    yf = fc.conv2d(x, wt, b, stride, padding, dilation, groups, activation=activation)
    pre = fc.conv2d(x, wt, b, stride, padding, dilation, groups)
    assert np.abs(y - yf).max() <= 0.05 * max(1.0, np.abs(pre).max())


@pytest.mark.skipif(not vnni.HAS_VNNI, reason="the VNNI kernel's task split")
@pytest.mark.parametrize("kblock", [32, 64, 96])
def test_int8_vnni_output_channel_split(rng, monkeypatch, kblock):
    """Tasks over blocks of output channels (small maps): every split of 80 channels
    (5 blocks of 16: pairs and a lone last block) and of 2 groups of 40, float and
    quantized outputs, equal to the integer reference bit for bit."""
    from fastconv import quantization
    calls = []

    def forced(prob, tile, threads):
        calls.append(prob.kg)
        return kblock
    monkeypatch.setattr(quantization, "_int8_kblock", forced)
    monkeypatch.setattr(quantization, "_geometry_cache", {})  # worked out again, forced
    for groups, c, r in ((1, 24, 3), (2, 16, 1), (1, 40, 1)):
        x = rng.standard_normal((2, c, 7, 7)).astype(np.float32)
        wt = rng.standard_normal((80, c // groups, r, r)).astype(np.float32)
        b = rng.standard_normal(80).astype(np.float32)
        xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
        wq, sw, _ = fc.quantize_tensor(wt, axis=0)
        kw = dict(padding=r // 2, groups=groups, activation="relu")
        y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, **kw)
        e = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, 1, r // 2, 1, groups, "relu")
        np.testing.assert_array_equal(y, e)
        yq = fc.int8_conv2d(xq, sx, zx, wq, sw, b, out_scale=0.02, out_zero_point=3,
                            out_dtype="uint8", **kw)
        eq = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, 1, r // 2, 1, groups, "relu",
                             out_scale=0.02, out_zero_point=3, out_dtype=np.uint8)
        np.testing.assert_array_equal(yq, eq)
    assert calls


@pytest.mark.skipif(not vnni.HAS_VNNI, reason="the VNNI kernel's task split")
@pytest.mark.parametrize("split", [(8, 32), (24, 64), (40, 96), (256, 32)])
def test_int8_taps_task_tiles(rng, monkeypatch, split):
    """Taps read in place with tasks of any tile (a multiple of 8, a last one short, one
    tile past the whole map) and channel block: 3x3 on a 13x11 map, strided, and two
    groups of 12 channels; float and quantized outputs equal to the integer reference."""
    from fastconv import quantization
    calls = []

    def forced(prob, threads):
        calls.append(prob.kg)
        return split
    monkeypatch.setattr(quantization, "_taps_split", forced)
    monkeypatch.setattr(quantization, "_geometry_cache", {})  # worked out again, forced
    for n, groups, c, stride in ((2, 1, 24, 1), (1, 1, 16, 2), (2, 2, 24, 1)):
        x = rng.standard_normal((n, c, 13, 11)).astype(np.float32)
        wt = rng.standard_normal((80, c // groups, 3, 3)).astype(np.float32)
        b = rng.standard_normal(80).astype(np.float32)
        xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
        wq, sw, _ = fc.quantize_tensor(wt, axis=0)
        kw = dict(stride=stride, padding=1, groups=groups, activation="relu6")
        y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, **kw)
        e = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, stride, 1, 1, groups, "relu6")
        np.testing.assert_array_equal(y, e)
        yq = fc.int8_conv2d(xq, sx, zx, wq, sw, b, out_scale=0.02, out_zero_point=-2,
                            out_dtype="int8", **kw)
        eq = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, stride, 1, 1, groups, "relu6",
                             out_scale=0.02, out_zero_point=-2, out_dtype=np.int8)
        np.testing.assert_array_equal(yq, eq)
    assert len(calls) == 3


@pytest.mark.skipif(not vnni.HAS_VNNI, reason="the pixel-vector 1x1 kernel needs VNNI")
@pytest.mark.parametrize("plan", [(16, 8), (48, 16), (112, 24), (64, 200)])
def test_int8_pixel_vector_task_splits(rng, monkeypatch, plan):
    """The 1x1 kernel that reads NCHW planes (pixels in the lanes) under forced task splits:
    tiles of one to seven 16-pixel vectors (blocks of 3, 2 and 1 vectors, a last vector of
    a few pixels), channel blocks of one to 25 strips with a partial last strip; float,
    residual + relu6, and uint8 / int8 outputs, equal to the integer reference; the
    caller's arrays untouched."""
    from fastconv import quantization
    calls = []

    def forced(prob, threads):
        calls.append(prob.k)
        return plan
    monkeypatch.setattr(quantization, "_px_plan", forced)
    monkeypatch.setattr(quantization, "_geometry_cache", {})
    n, c, h, w, k = 2, 37, 9, 13, 67
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((k, c, 1, 1)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    res = rng.standard_normal((n, k, h, w)).astype(np.float32)
    xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
    wq, sw, _ = fc.quantize_tensor(wt, axis=0)
    before = (xq.copy(), wq.copy(), res.copy())
    y = fc.int8_conv2d(xq, sx, zx, wq, sw, b)
    np.testing.assert_array_equal(y, ref.int8_conv2d(xq, int(zx), sx, wq, sw, b))
    y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, activation="relu6", residual=res)
    np.testing.assert_array_equal(y, ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, 1, 0, 1, 1,
                                                     "relu6", residual=res))
    for odt, zy in (("uint8", 9), ("int8", -4)):
        yq = fc.int8_conv2d(xq, sx, zx, wq, sw, b, activation="relu", out_scale=0.05,
                            out_zero_point=zy, out_dtype=odt)
        eq = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, 1, 0, 1, 1, "relu", out_scale=0.05,
                             out_zero_point=zy, out_dtype=np.dtype(odt).type)
        np.testing.assert_array_equal(yq, eq)
    for a, a0 in zip((xq, wq, res), before):
        np.testing.assert_array_equal(a, a0)
    assert calls
    assert fc.int8_conv2d(xq[:0], sx, zx, wq, sw, b).shape == (0, k, h, w)   # no batch


@pytest.mark.skipif(not vnni.HAS_VNNI, reason="the VNNI kernel's row blocks")
@pytest.mark.parametrize("case", [
    # N, C, H, W, K, R, S, stride, padding, dilation, groups
    (2, 128, 7, 7, 40, 3, 3, 1, 1, 1, 1),      # 512@7's shape, small: top/bottom rows skip
    (1, 48, 8, 8, 24, 5, 5, 1, 2, 1, 1),       # 8 wide, two rows skipped at each border
    (1, 128, 14, 13, 20, 3, 3, 2, (1, 0, 1, 1), 1, 1),   # stride 2, asymmetric pads
    (1, 256, 9, 7, 48, 3, 3, 1, (2, 0, 1, 1), (2, 1), 2),  # dilation 2, groups of 128
])
@pytest.mark.parametrize("kblock", [None, 32])
def test_int8_row_blocks_skip_padding_rows(rng, monkeypatch, case, kblock):
    """Maps 7-8 pixels wide run a block per output row and skip the kernel rows that only
    read padding, the zero-point correction taken over the rows kept: equal to the integer
    reference (float, residual, requantized outputs), under output-channel splits too."""
    from fastconv import quantization
    monkeypatch.setattr(quantization, "_geometry_cache", {})
    if kblock:
        monkeypatch.setattr(quantization, "_int8_kblock", lambda prob, tile, threads: kblock)
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x = (2 * rng.standard_normal((n, c, h, w))).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
    wq, sw, _ = fc.quantize_tensor(wt, axis=0)
    geo = quantization._geometry(xq.shape, wq.shape, stride, padding, dilation, groups, "t",
                                 True)
    assert geo[6] is not None and len(geo[6][1]) > 1 and geo[2] % geo[0].ow == 0
    args = (stride, padding, dilation, groups)
    y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, *args)
    np.testing.assert_array_equal(y, ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, *args))
    res = rng.standard_normal(y.shape).astype(np.float32)
    y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, *args, activation="relu", residual=res)
    np.testing.assert_array_equal(y, ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, *args, "relu",
                                                     residual=res))
    yq = fc.int8_conv2d(xq, sx, zx, wq, sw, b, *args, activation="relu6", out_scale=0.05,
                        out_zero_point=-3, out_dtype="int8")
    np.testing.assert_array_equal(yq, ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, *args,
                                                      "relu6", out_scale=0.05,
                                                      out_zero_point=-3, out_dtype=np.int8))
    # no batch: the row-block plan of an empty problem (its cost over no tasks) is no error
    assert fc.int8_conv2d(xq[:0], sx, zx, wq, sw, b, *args).shape == (0,) + y.shape[1:]


@pytest.mark.skipif(not vnni.HAS_VNNI, reason="the VNNI kernel's row blocks")
@pytest.mark.parametrize("case", [
    # N, C, H, W, K, R, S, stride, padding, dilation, groups
    (1, 128, 14, 14, 72, 3, 3, 1, 1, 1, 1),     # 256@14's blocks: 2 a row, both ends
    (2, 128, 28, 28, 48, 3, 3, 1, 1, 1, 1),     # 4 a row, 32 + 16 output channels
    (1, 64, 14, 14, 40, 5, 5, 1, 2, 1, 1),      # two columns at each end, one left out
    (1, 128, 28, 27, 24, 3, 3, 2, (1, 1, 1, 2), 1, 1),  # stride 2: both ends, 14 wide
    (1, 128, 28, 28, 24, 3, 3, 2, 1, 1, 1),     # stride 2: the left end only
    (1, 128, 8, 15, 32, 3, 3, 1, (1, 1, 0, 3), (1, 2), 1),  # dilated columns, the right
    (1, 256, 7, 7, 48, 3, 3, 1, 1, 1, 2),       # groups of 128, one block a row
    (1, 128, 6, 9, 16, 3, 3, 1, (0, 0, 0, 0), (1, 1), 1),   # 7 wide, no padding at all
])
@pytest.mark.parametrize("kblock", [None, 32])
def test_int8_seven_pixel_row_blocks(rng, monkeypatch, case, kblock):
    """Maps whose width is a multiple of 7 (not 8) run blocks of seven pixels along each
    row, the first and last leaving out the taps that read only padding and starting
    from those taps' zero-point products: equal to the integer reference (float, residual,
    requantized int8 and uint8 outputs, int8 input), under output-channel splits too."""
    from fastconv import quantization
    monkeypatch.setattr(quantization, "_geometry_cache", {})
    if kblock:
        monkeypatch.setattr(quantization, "_row_plan",
                            lambda prob, spans, threads, tile, kb, edges=None:
                            (prob.ow * 2, kblock))
    n, c, h, w, k, r, s, stride, padding, dilation, groups = case
    x = (2 * rng.standard_normal((n, c, h, w))).astype(np.float32)
    wt = rng.standard_normal((k, c // groups, r, s)).astype(np.float32)
    b = rng.standard_normal(k).astype(np.float32)
    wq, sw, _ = fc.quantize_tensor(wt, axis=0)
    args = (stride, padding, dilation, groups)
    for xdtype in ("uint8", "int8"):
        xq, sx, zx = fc.quantize_tensor(x, dtype=xdtype)
        geo = quantization._geometry(xq.shape, wq.shape, *args, "t", True)
        assert geo[6] is not None and geo[6][2] is not None and geo[0].ow % 7 == 0
        y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, *args)
        np.testing.assert_array_equal(y, ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, *args))
        res = rng.standard_normal(y.shape).astype(np.float32)
        y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, *args, activation="relu", residual=res)
        np.testing.assert_array_equal(y, ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, *args,
                                                         "relu", residual=res))
        for odt, zy in (("int8", -3), ("uint8", 7)):
            yq = fc.int8_conv2d(xq, sx, zx, wq, sw, b, *args, activation="relu6",
                                out_scale=0.05, out_zero_point=zy, out_dtype=odt)
            np.testing.assert_array_equal(yq, ref.int8_conv2d(
                xq, int(zx), sx, wq, sw, b, *args, "relu6", out_scale=0.05, out_zero_point=zy,
                out_dtype=np.dtype(odt).type))


def test_int8_edge_columns_and_masks():
    """The kernel columns that read only padding from a row's first and last pixels, and
    each row class's tap bits for them (tap (r - lo)*S + s of the class's rows)."""
    from fastconv.functional import conv_problem
    from fastconv.quantization import _edge_columns, _edge_masks
    assert _edge_columns(conv_problem((1, 8, 14, 14), (8, 8, 3, 3), 1, 1)) == ((0,), (2,))
    assert _edge_columns(conv_problem((1, 8, 14, 14), (8, 8, 5, 5), 1, 2)) == ((0, 1), (3, 4))
    assert _edge_columns(conv_problem((1, 8, 28, 28), (8, 8, 3, 3), 2, 1)) == ((0,), ())
    assert _edge_columns(conv_problem((1, 8, 7, 7), (8, 8, 3, 3), 1, 0)) == ((), ())
    assert _edge_columns(conv_problem((1, 8, 7, 7), (8, 8, 3, 3), 1, 1, (1, 2))) == \
        ((0,), (2,))
    masks = _edge_masks(((1, 3), (0, 3), (0, 2)), ((0,), (2,)), 3)
    assert masks.tolist() == [[0b001001, 0b100100], [0b001001001, 0b100100100],
                              [0b001001, 0b100100]]


@pytest.mark.skipif(not vnni.HAS_VNNI, reason="the VNNI kernel's row blocks")
def test_int8_row_blocks_of_one_layer_on_two_heights(rng):
    """One layer (weights and packed dict) on a 14x14 map, whose rows fall in three
    classes (top, middle, bottom), then on a 2x14 one, where two classes are numbered
    differently: each call's zero-point corrections are its own classes', equal to the
    integer reference."""
    from fastconv import quantization
    wt = rng.standard_normal((32, 128, 3, 3)).astype(np.float32)
    wq, sw, _ = fc.quantize_tensor(wt, axis=0)
    packed = {}
    for h in (14, 2, 14):
        x = rng.standard_normal((1, 128, h, 14)).astype(np.float32)
        xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
        geo = quantization._geometry(xq.shape, wq.shape, 1, 1, 1, 1, "t", True)
        assert geo[6] is not None and len(geo[6][1]) == (3 if h == 14 else 2)
        y = fc.int8_conv2d(xq, sx, zx, wq, sw, None, padding=1, packed=packed)
        np.testing.assert_array_equal(y, ref.int8_conv2d(xq, int(zx), sx, wq, sw, None, 1, 1))


def test_int8_row_block_rule():
    """Row blocks where they save products without adding blocks: 7x7, 14x14 and 28x28 3x3
    maps (whole rows per task, every thread busy; rows of seven pixels whose end columns
    leave out their padding taps), not 56x56 (2.4 % of the products, and 8-pixel blocks
    fill its rows already), 4x4 (half-filled blocks), short reductions or unpadded
    convs."""
    from fastconv.functional import conv_problem
    from fastconv.quantization import _int8_kblock, _int8_rows, _int8_tile

    def rows_of(prob):   # against the plain blocks' split at two threads
        tile = _int8_tile(prob, -(-prob.cg * prob.r * prob.s // 4) * 4, 2)
        return _int8_rows(prob, 2, tile, _int8_kblock(prob, tile, 2))
    rows, classes, edges, tile, kblock = rows_of(conv_problem((1, 512, 7, 7), (512, 512, 3, 3),
                                                              1, 1))
    assert classes == ((1, 3), (0, 3), (0, 2)) and edges == ((0,), (2,))
    assert rows.tolist() == [[1, 3, 0]] + [[0, 3, 1]] * 5 + [[0, 2, 2]]
    assert tile % 7 == 0 and kblock % 32 == 0
    assert -(-49 // tile) * -(-512 // kblock) >= 2
    for h in (14, 28):
        rows, classes, edges, tile, kblock = rows_of(conv_problem((1, 256, h, h),
                                                                  (256, 256, 3, 3), 1, 1))
        assert edges == ((0,), (2,))
        assert tile % h == 0 and -(-h * h // tile) * -(-256 // kblock) >= 2
    # stride 2 from 28x28 to 14x14: only the left column reads padding
    assert rows_of(conv_problem((1, 256, 28, 28), (256, 256, 3, 3), 2, 1))[2] == ((0,), ())
    for shape, pad in (((1, 512, 7, 7), 0), ((1, 64, 56, 56), 1), ((1, 128, 4, 4), 1),
                       ((1, 64, 8, 8), 1)):
        assert rows_of(conv_problem(shape, (shape[1], shape[1], 3, 3), 1, pad)) is None


def test_int8_pixel_vector_plan():
    """Which convs read NCHW planes, and the task split's shape: pixels in 16s with the
    panel within bounds, channels in 8s, every thread busy on ResNet-50's 1x1 layers."""
    from fastconv.functional import conv_problem
    from fastconv.quantization import PX_PANEL_BYTES, _px_applies, _px_plan
    def prob(c, h, k, stride=1, padding=0, groups=1):
        return conv_problem((1, c, h, h), (k, c // groups, 1, 1), stride, padding,
                            groups=groups)
    assert _px_applies(prob(256, 56, 64))
    assert not _px_applies(prob(256, 56, 64, stride=2))
    assert not _px_applies(prob(256, 56, 64, padding=1))
    assert not _px_applies(prob(256, 56, 64, groups=2))
    assert not _px_applies(conv_problem((1, 64, 14, 14), (64, 64, 3, 3), 1, 1))
    for c, h, k in ((256, 56, 64), (1024, 14, 256), (2048, 7, 512), (64, 56, 256)):
        tile, kblock = _px_plan(prob(c, h, k), 2)
        assert tile % 16 == 0 and kblock % 8 == 0
        assert tile * 4 * -(-c // 4) <= max(PX_PANEL_BYTES, 64 * c)
        assert -(-h * h // tile) * -(-k // kblock) >= 2


def test_int8_trimmed_taps_keep_their_own_packed_weights(rng):
    """One layer (weights and packed dict) on a map where only the centre tap reads the
    input, then on one where every tap does: each equal to the integer reference, the
    trimmed weights kept apart from the whole ones."""
    wt = rng.standard_normal((24, 16, 3, 3)).astype(np.float32)
    wq, sw, _ = fc.quantize_tensor(wt, axis=0)
    b = rng.standard_normal(24).astype(np.float32)
    packed = {}
    for hw in (1, 5, 1):
        x = rng.standard_normal((1, 16, hw, hw)).astype(np.float32)
        xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
        y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, padding=1, packed=packed)
        e = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, 1, 1, 1, 1, None)
        np.testing.assert_array_equal(y, e)
    assert ("int8_trimmed", (1, 2, 1, 2)) in packed and "int8" in packed
    assert packed[("int8_trimmed", (1, 2, 1, 2))]["int8"][0].shape == (24, 16)


def test_int8_repeated_calls_through_one_packed_dict(rng):
    """A layer's packed dict keeps each call signature's worked-out call (_Int8Call): calls
    that change the input values, scales, zero points, bias, residual, activation, output
    type, geometry or thread count each equal the integer reference; bad arguments after
    a kept call are still named, and the caller's arrays are left as they were."""
    from fastconv import quantization
    wt = rng.standard_normal((40, 64, 3, 3)).astype(np.float32)
    wq, sw, _ = fc.quantize_tensor(wt, axis=0)
    packed = {}
    threads = fc.get_num_threads()
    cases = [  # (batch, size, xdtype, bias, residual, activation, out dtype, padding, stride)
        (1, 14, "uint8", None, False, None, None, 1, 1),
        (1, 14, "uint8", None, False, None, None, 1, 1),      # the same signature again
        (1, 14, "uint8", "b1", False, "relu", None, 1, 1),
        (1, 14, "uint8", "b2", True, "relu", None, 1, 1),
        (2, 14, "int8", "b1", False, None, "uint8", 1, 1),
        (2, 14, "int8", None, True, "relu6", "int8", 1, 1),
        (1, 9, "uint8", "b2", False, None, None, 0, 2),
        (1, 14, "uint8", None, False, None, None, 0, 2),      # the first's shape, strided
        (1, 14, "uint8", None, False, None, None, 1, 1),
    ]
    biases = {"b1": rng.standard_normal(40).astype(np.float32),
              "b2": rng.standard_normal(40).astype(np.float32)}
    for i, (n, hw, xdt, bn, with_res, act, odt, pad, sd) in enumerate(cases):
        if i == len(cases) - 1:
            fc.set_num_threads(1)
        try:
            x = (2 * rng.standard_normal((n, 64, hw, hw))).astype(np.float32)
            zp = 128 if xdt == "uint8" else 0   # fixed scales: signatures can repeat
            xq, sx, zx = fc.quantize_tensor(x, scale=0.05, zero_point=zp, dtype=xdt)
            b = biases.get(bn)
            oh = (hw + 2 * pad - 3) // sd + 1
            res = rng.standard_normal((n, 40, oh, oh)).astype(np.float32) if with_res else None
            kept = [a.copy() for a in (xq, b, res) if a is not None]
            kw = dict(stride=sd, padding=pad, activation=act, residual=res)
            rq = {} if odt is None else dict(out_scale=0.05, out_zero_point=3, out_dtype=odt)
            y = fc.int8_conv2d(xq, sx, zx, wq, sw, b, packed=packed, **kw, **rq)
            e = ref.int8_conv2d(xq, int(zx), sx, wq, sw, b, sd, pad, 1, 1, act, residual=res,
                                **({} if odt is None else dict(
                                    out_scale=0.05, out_zero_point=3,
                                    out_dtype=np.dtype(odt).type)))
            np.testing.assert_array_equal(y, e)
            for a, k in zip([a for a in (xq, b, res) if a is not None], kept):
                np.testing.assert_array_equal(a, k)
        finally:
            fc.set_num_threads(threads)
    calls = packed[quantization._CALLS]
    # one call per signature: bias and residual are checked per call, not part of it
    assert len(calls) == 7
    # what run() checks is still checked on a kept call, with the layer's name
    x = rng.standard_normal((1, 64, 14, 14)).astype(np.float32)
    xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
    with pytest.raises(ValueError, match="conv7: bias must have 40 elements"):
        fc.int8_conv2d(xq, sx, zx, wq, sw, np.zeros(39, np.float32), padding=1,
                       packed=packed, layer="conv7")
    with pytest.raises(ValueError, match="conv7: residual must have shape"):
        fc.int8_conv2d(xq, sx, zx, wq, sw, None, padding=1, packed=packed, layer="conv7",
                       residual=np.zeros((1, 40, 13, 13), np.float32))
    with pytest.raises(ValueError, match="conv7: out must be"):
        fc.int8_conv2d(xq, sx, zx, wq, sw, None, padding=1, packed=packed, layer="conv7",
                       out=np.zeros((1, 40, 14, 14), np.float64))
    out = np.full((1, 40, 14, 14), np.nan, np.float32)
    y = fc.int8_conv2d(xq, sx, zx, wq, sw, None, padding=1, packed=packed, layer="conv7",
                       out=out)
    assert y.base is out or y is out
    np.testing.assert_array_equal(out, ref.int8_conv2d(xq, int(zx), sx, wq, sw, None, 1, 1))
    with pytest.raises(ValueError, match="x_scale"):   # a bad scale is never a kept call
        fc.int8_conv2d(xq, np.nan, zx, wq, sw, None, padding=1, packed=packed)


def test_int8_task_split_choice():
    from fastconv.functional import conv_problem
    from fastconv.quantization import _int8_kblock
    # 512@7: 7 tiles of 8 pixels; two halves give 7 + 7 tasks per thread pair
    assert _int8_kblock(conv_problem((1, 512, 7, 7), (512, 512, 3, 3), 1, 1), 8, 2) == 256
    # 64@56: 131 tiles already balance; no split
    assert _int8_kblock(conv_problem((1, 64, 56, 56), (64, 64, 3, 3), 1, 1), 24, 2) == 64


def test_int8_taps_split_choice():
    """Taps read in place: tiles as large as keep the two threads as evenly loaded as the
    best split (8-pixel tasks had streamed each pair's weights for one block)."""
    from fastconv.functional import conv_problem
    from fastconv.quantization import _taps_split
    p = conv_problem((1, 128, 28, 28), (128, 128, 3, 3), 1, 1)
    assert _taps_split(p, 2) == (112, 64)      # 7 tiles x 2 channel halves: 7 tasks each
    p = conv_problem((8, 64, 56, 56), (64, 64, 3, 3), 1, 1)
    assert _taps_split(p, 2) == (256, 64)      # 13 tiles an image, 52 tasks a thread
    p = conv_problem((1, 16, 5, 5), (24, 16, 3, 3), 1, 1)
    assert _taps_split(p, 1) == (32, 32)       # one thread: the whole map in one task
    assert _taps_split(conv_problem((0, 16, 5, 5), (24, 16, 3, 3), 1, 1), 2)[0] == 8


def test_int8_conv_residual(rng):
    x = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    wt = rng.standard_normal((4, 4, 3, 3)).astype(np.float32)
    res = rng.standard_normal((1, 4, 6, 6)).astype(np.float32)
    xq, sx, zx = fc.quantize_tensor(x, dtype="uint8")
    wq, sw, _ = fc.quantize_tensor(wt, axis=0)
    y = fc.int8_conv2d(xq, sx, zx, wq, sw, None, padding=1, activation="relu", residual=res)
    e = ref.int8_conv2d(xq, int(zx), sx, wq, sw, None, 1, 1, 1, 1, "relu", residual=res)
    np.testing.assert_array_equal(y, e)
    yq = fc.int8_conv2d(xq, sx, zx, wq, sw, None, padding=1, activation="relu6", residual=res,
                        out_scale=0.03, out_zero_point=5, out_dtype="uint8")
    eq = ref.int8_conv2d(xq, int(zx), sx, wq, sw, None, 1, 1, 1, 1, "relu6", residual=res,
                         out_scale=0.03, out_zero_point=5, out_dtype=np.uint8)
    np.testing.assert_array_equal(yq, eq)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 2), c=st.integers(2, 40), h=st.integers(1, 19), w=st.integers(1, 23),
       r=st.integers(1, 5), s=st.integers(1, 5), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dil=st.integers(1, 2), pads=st.tuples(*[st.integers(0, 3)] * 4),
       xdtype=st.sampled_from(["int8", "uint8"]), act=st.sampled_from([None, "relu", "relu6"]),
       with_res=st.booleans(), seed=st.integers(0, 1000))
def test_int8_depthwise_matches_the_integer_reference(n, c, h, w, r, s, sh, sw, dil, pads,
                                                      xdtype, act, with_res, seed):
    """The depthwise kernel (one channel a group, NCHW planes): any filter, stride,
    dilation and asymmetric padding, both input types, the residual and activations, float
    and requantized out, equal to the integer reference bit for bit."""
    rng = np.random.default_rng(seed)
    oh = (h + pads[0] + pads[1] - dil * (r - 1) - 1) // sh + 1
    ow = (w + pads[2] + pads[3] - dil * (s - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        return
    x = (2 * rng.standard_normal((n, c, h, w))).astype(np.float32)
    wt = rng.standard_normal((c, 1, r, s)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    res = rng.standard_normal((n, c, oh, ow)).astype(np.float32) if with_res else None
    xq, sx, zx = fc.quantize_tensor(x, dtype=xdtype)
    wq, swt, _ = fc.quantize_tensor(wt, axis=0)
    keep = xq.copy()
    kw = dict(stride=(sh, sw), padding=pads, dilation=dil, groups=c, activation=act)
    args = ((sh, sw), pads, dil, c, act)
    np.testing.assert_array_equal(fc.int8_conv2d(xq, sx, zx, wq, swt, b, residual=res, **kw),
                                  ref.int8_conv2d(xq, int(zx), sx, wq, swt, b, *args,
                                                  residual=res))
    yq = fc.int8_conv2d(xq, sx, zx, wq, swt, b, residual=res, out_scale=0.02,
                        out_zero_point=7, out_dtype="uint8", **kw)
    np.testing.assert_array_equal(yq, ref.int8_conv2d(xq, int(zx), sx, wq, swt, b, *args,
                                                      residual=res, out_scale=0.02,
                                                      out_zero_point=7, out_dtype=np.uint8))
    np.testing.assert_array_equal(xq, keep)


@pytest.mark.parametrize("c,h,w,k,stride,dil,pads", [
    (20, 70, 66, 3, 1, 1, (1, 1, 1, 1)),   # several bands of output rows, a channel tail
    (33, 61, 64, 3, 2, 1, (1, 0, 0, 1)),   # stride 2 (even / odd columns), asymmetric pads
    (16, 50, 47, 5, 1, 2, (4, 4, 4, 4)),   # 5x5 dilated
    (17, 45, 52, 7, 3, 1, (3, 3, 2, 3)),   # 7x7 at stride 3 (one pixel a step)
    (48, 4, 4, 3, 1, 1, (1, 1, 1, 1)),     # the smallest planes the blocks take
])
@pytest.mark.parametrize("xdtype", ["uint8", "int8"])
def test_int8_depthwise_blocks_in_bands(rng, c, h, w, k, stride, dil, pads, xdtype):
    """The 16-channel-block form of the int8 depthwise kernel (square 3x3, 5x5, 7x7 filters,
    planes of >= 16 pixels) on planes large enough for several bands of output rows, each
    band's input rows converted and transposed as it needs them, finished on the pixel
    vectors (no residual) or on the planes (a residual): the integer reference's result
    bit for bit, float and requantized, with each activation, on both input types at
    their extremes."""
    x = (2 * rng.standard_normal((2, c, h, w))).astype(np.float32)
    wt = rng.standard_normal((c, 1, k, k)).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    xq, sx, zx = fc.quantize_tensor(x, dtype=xdtype)
    xq[0, :, :2] = np.iinfo(xq.dtype).min   # the type's extremes, converted on the way in
    xq[1, :, -2:] = np.iinfo(xq.dtype).max
    wq, swt, _ = fc.quantize_tensor(wt, axis=0)
    oh = (h + pads[0] + pads[1] - dil * (k - 1) - 1) // stride + 1
    ow = (w + pads[2] + pads[3] - dil * (k - 1) - 1) // stride + 1
    res = rng.standard_normal((2, c, oh, ow)).astype(np.float32)
    for residual, act in ((res, "relu6"), (None, "relu6"), (None, None), (res, "relu"),
                          (None, "relu")):
        kw = dict(stride=stride, padding=pads, dilation=dil, groups=c, activation=act)
        args = (stride, pads, dil, c, act)
        np.testing.assert_array_equal(
            fc.int8_conv2d(xq, sx, zx, wq, swt, b, residual=residual, **kw),
            ref.int8_conv2d(xq, int(zx), sx, wq, swt, b, *args, residual=residual))
        got = fc.int8_conv2d(xq, sx, zx, wq, swt, b, residual=residual, out_scale=0.02,
                             out_zero_point=3, out_dtype="uint8", **kw)
        np.testing.assert_array_equal(got, ref.int8_conv2d(
            xq, int(zx), sx, wq, swt, b, *args, residual=residual, out_scale=0.02,
            out_zero_point=3, out_dtype=np.uint8))


@pytest.mark.parametrize("layer", [
    dict(c=16, k=40, r=1, groups=1, hw=13),    # the pixel-vector 1x1
    dict(c=12, k=24, r=3, groups=1, hw=9),     # taps read in place
    dict(c=24, k=24, r=3, groups=24, hw=11),   # depthwise in 16-channel blocks
    dict(c=5, k=5, r=3, groups=5, hw=3),       # depthwise plane by plane
])
@pytest.mark.parametrize("out_dtype, zy", [("uint8", 3), ("int8", -5)])
def test_int8_requantization_bounds(rng, layer, out_dtype, zy):
    """The requantizing epilogues clamp before rounding, relu's lower and relu6's upper
    bound merged with the output range's: outputs driven far past both ends of the range
    and past 6, with 6 / out_scale below, at and above the range's top (qmax - zy), equal
    the integer reference bit for bit."""
    c, k, r, groups, hw = (layer[n] for n in ("c", "k", "r", "groups", "hw"))
    xq = rng.integers(0, 256, (1, c, hw, hw), dtype=np.uint8)
    wq = rng.integers(-127, 128, (k, c // groups, r, r), dtype=np.int8)
    b = rng.permutation(np.linspace(-12, 12, k)).astype(np.float32)
    sw = rng.uniform(0.5, 2.0, k).astype(np.float32) / (c // groups * r * r * 127 * 64)
    top = np.iinfo(out_dtype).max - zy
    for act in (None, "relu", "relu6"):
        for s6 in (top - 40, top, top + 1, top + 60):
            kw = dict(padding=r // 2, groups=groups, activation=act, out_scale=6.0 / s6,
                      out_zero_point=zy, out_dtype=out_dtype)
            got = fc.int8_conv2d(xq, 0.05, 128, wq, sw, b, **kw)
            want = ref.int8_conv2d(xq, 128, 0.05, wq, sw, b, 1, r // 2, 1, groups, act,
                                   out_scale=6.0 / s6, out_zero_point=zy,
                                   out_dtype=np.dtype(out_dtype))
            np.testing.assert_array_equal(got, want)
            lo, hi = np.iinfo(out_dtype).min, np.iinfo(out_dtype).max   # both ends reached
            assert got.min() == (zy if act else lo)
            assert got.max() == (min(hi, zy + s6) if act == "relu6" else hi)


@pytest.mark.parametrize("c,k,r,stride,pads,groups,hw", [
    (3, 64, 7, 2, (3, 3, 3, 3), 1, 38),   # ResNet's stem
    (3, 32, 3, 2, (1, 1, 1, 1), 1, 29),   # MobileNetV2's
    (3, 16, 3, 1, (1, 0, 2, 1), 1, 17),   # stride 1, asymmetric pads
    (6, 12, 3, 1, (1, 1, 1, 1), 2, 9),    # 3 channels a group
    (5, 8, 1, 1, (0, 0, 0, 0), 1, 11),    # a 1x1 of 5 channels
    (57, 8, 3, 1, (1, 1, 1, 1), 1, 6),    # 513 taps: the most a float32 sum holds exactly
    (19, 16, 7, 1, (3, 2, 3, 3), 1, 9),   # 931 taps: channel padding only
    (2, 8, 5, 3, (2, 2, 1, 0), 1, 16),    # 2 channels, stride 3
    (1, 8, 5, 1, (2, 2, 2, 2), 1, 12),    # one channel: the float kernels
    (3, 16, 3, 2, (1, 1, 1, 1), 1, 70),   # rows of >= 64 pixels, moved 64 a step
])
@pytest.mark.parametrize("xdtype", ["uint8", "int8"])
@pytest.mark.parametrize("path", ["float", "cpad"])
def test_int8_stems_run_exactly(rng, monkeypatch, c, k, r, stride, pads, groups, hw, xdtype,
                                path):
    """A conv with Cg % 4 input channels a group (an RGB stem) runs on the float kernels
    from x - zx where its float32 sums are the exact integers (at most MAX_TAPS products),
    or (path cpad, an AVX-512 VNNI CPU) ungrouped with its channels padded to a multiple of
    4 on the VNNI conv: either way the integer reference's result bit for bit, float and
    requantized, with the residual and activations; the input untouched."""
    from fastconv import quantization as Q
    from fastconv.kernels.cpu import vnni
    from fastconv.kernels.cpu.depthwise_int8 import MAX_TAPS
    cpad = path == "cpad" and groups == 1 and c > 1 and r > 1
    if path == "cpad" and not (cpad and vnni.HAS_VNNI):
        pytest.skip("channel padding: ungrouped, 2 or more channels, a VNNI CPU")
    if path == "float":
        if c // groups * r * r > MAX_TAPS:
            pytest.skip("more products a sum than float32 holds exactly")
        monkeypatch.setattr(Q, "_cpad_applies", lambda prob, px: False)
    x = (2 * rng.standard_normal((2, c, hw, hw))).astype(np.float32)
    xq, sx, zx = fc.quantize_tensor(x, dtype=xdtype)
    # extreme integers: every product at its largest, so an inexact sum would show
    xq[0, :, :3] = np.iinfo(xq.dtype).max
    wq, swt, _ = fc.quantize_tensor(rng.standard_normal((k, c // groups, r, r))
                                    .astype(np.float32), axis=0)
    wq[0] = 127
    b = rng.standard_normal(k).astype(np.float32)
    oh = (hw + pads[0] + pads[1] - r) // stride + 1
    ow = (hw + pads[2] + pads[3] - r) // stride + 1
    res = rng.standard_normal((2, k, oh, ow)).astype(np.float32)
    keep = xq.copy()
    pk = {}
    for act, residual in ((None, None), ("relu6", res)):
        args = (stride, pads, 1, groups, act)
        np.testing.assert_array_equal(
            fc.int8_conv2d(xq, sx, zx, wq, swt, b, *args, residual=residual, packed=pk),
            ref.int8_conv2d(xq, int(zx), sx, wq, swt, b, *args, residual=residual))
        np.testing.assert_array_equal(
            fc.int8_conv2d(xq, sx, zx, wq, swt, b, *args, residual=residual, out_scale=0.05,
                           out_zero_point=4, out_dtype="uint8", packed=pk),
            ref.int8_conv2d(xq, int(zx), sx, wq, swt, b, *args, residual=residual,
                            out_scale=0.05, out_zero_point=4, out_dtype=np.uint8))
    calls = pk[Q._CALLS].values()
    if cpad:
        assert all(call.cpad == -(-c // 4) * 4 and call.fx is None for call in calls)
    else:
        assert all(call.fx is not None and call.cpad is None for call in calls)
    np.testing.assert_array_equal(xq, keep)


@pytest.mark.parametrize("c, h, w, pads", [(4, 5, 64, (1, 1, 1, 1)), (4, 3, 131, (0, 2, 3, 0)),
                                           (2, 4, 70, (2, 0, 0, 5)), (3, 2, 63, (1, 1, 1, 1))])
@pytest.mark.parametrize("xdtype", [np.uint8, np.int8])
def test_int8_move_of_four_channels(rng, c, h, w, pads, xdtype):
    """The channels-last move of at most four byte channels into words of four (rows of
    >= 64 pixels 64 at a time, the last step overlapping; narrower rows element by
    element): the padded layout with the border at the fill value and every pixel's
    channels in place, the channels past c copies of the last; and the conv that reads
    it equal to the integer reference."""
    from fastconv.kernels.cpu import int8 as k8
    info = np.iinfo(xdtype)
    x = rng.integers(info.min, info.max + 1, (2, c, h, w)).astype(xdtype)
    pt, pb, pl, pr = pads
    out = np.full((2, h + pt + pb, w + pl + pr, 4), 99, xdtype)
    k8.nhwc_padded(x, out, pt, pl, xdtype(7))
    want = np.full_like(out, 7)
    want[:, pt:pt + h, pl:pl + w, :c] = x.transpose(0, 2, 3, 1)
    if w >= 64:   # the word interleave repeats the last channel
        want[:, pt:pt + h, pl:pl + w, c:] = x[:, -1:].transpose(0, 2, 3, 1)
    np.testing.assert_array_equal(out, want)
    wq = rng.integers(-127, 128, (8, c, 3, 3), dtype=np.int8)
    sw = np.full(8, 0.01, np.float32)
    zx = 3 if xdtype == np.uint8 else -3
    np.testing.assert_array_equal(
        fc.int8_conv2d(x, 0.05, zx, wq, sw, None, padding=pads, activation="relu",
                       out_scale=0.1, out_zero_point=2, out_dtype="uint8"),
        ref.int8_conv2d(x, zx, 0.05, wq, sw, None, 1, pads, 1, 1, "relu", out_scale=0.1,
                        out_zero_point=2, out_dtype=np.uint8))


def test_quantize_tensor_roundtrip_and_saturation():
    x = np.array([-1.0, -0.5, 0.0, 0.26, 1.0], np.float32)
    q, s, z = fc.quantize_tensor(x)
    assert q.dtype == np.int8 and z == 0 and np.isclose(s, 1 / 127)
    np.testing.assert_array_equal(q, [-127, -64, 0, 33, 127])  # -63.5 rounds to even
    qu, su, zu = fc.quantize_tensor(x, dtype="uint8")
    assert qu.min() <= 1 and qu.max() == 255
    assert np.abs(fc.dequantize_tensor(qu, su, zu) - x).max() <= su / 2 + 1e-7
    q2, _, _ = fc.quantize_tensor(np.array([10.0, -10.0], np.float32), scale=0.01)
    np.testing.assert_array_equal(q2, [127, -128])  # saturates
    w = np.stack([np.full(3, 0.1), np.full(3, 10.0)]).astype(np.float32)
    qw, sw, _ = fc.quantize_tensor(w, axis=0)
    assert sw.shape == (2,) and np.all(qw == 127)


@pytest.mark.parametrize("shape,pads", [
    ((1, 32, 16, 16), (1, 1, 1, 1)),     # whole 16 x 16 blocks
    ((2, 20, 5, 19), (0, 2, 3, 0)),      # channel and column tails (overlapping last groups)
    ((1, 256, 7, 56), (0, 0, 0, 0)),     # a ResNet 1x1 input's rows
    ((1, 15, 4, 40), (1, 0, 0, 1)),      # < 16 channels: the scalar path
    ((1, 40, 3, 9), (2, 2, 2, 2)),       # < 16 columns: one masked group a row
    ((1, 64, 7, 7), (1, 1, 1, 1)),       # a 7x7 map's padded rows
    ((2, 17, 2, 1), (0, 1, 3, 0)),       # one column
    ((2, 40, 14, 14), (0, 0, 0, 0)),     # < 16 columns, no padding: pixels regrouped in rows
])
@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_nhwc_is_exact(kernel_path, rng, shape, pads, dtype):
    """Quantizing into the padded channels-last layout equals quantize_tensor then a
    transpose, byte for byte: half-way values round to even, out-of-range saturates."""
    from fastconv.quantization import quantize_nhwc
    scale = 0.05
    x = (rng.standard_normal(shape) * 4).astype(np.float32)
    x.flat[::7] = (rng.integers(-300, 300, x.size)[::7] + 0.5).astype(np.float32) * scale
    x.flat[::11] = 1e4 * np.sign(x.flat[::11])
    zp = 3 if dtype == "uint8" else -2
    x_before = x.copy()
    out, zk = quantize_nhwc(x, scale, zp, dtype, pads)
    q, _, _ = fc.quantize_tensor(x, scale=scale, zero_point=zp, dtype=dtype)
    shift = zk - zp
    expected = np.full((shape[0], shape[2] + pads[0] + pads[1], shape[3] + pads[2] + pads[3],
                        shape[1]), zk, np.int64)
    expected[:, pads[0]:pads[0] + shape[2], pads[2]:pads[2] + shape[3]] = (
        q.transpose(0, 2, 3, 1).astype(np.int64) + shift)
    np.testing.assert_array_equal(out.astype(np.int64), expected)
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("dtype", ["int8", "uint8"])
def test_quantize_nchw_is_exact(kernel_path, rng, dtype):
    """A model's input to a 1x1 read from planes, quantized in place: quantize_tensor's
    bytes (shifted to uint8 for VNNI), half-way values to even, saturation."""
    from fastconv.quantization import quantize_nchw
    scale = 0.05
    x = (rng.standard_normal((2, 7, 5, 9)) * 4).astype(np.float32)
    x.flat[::7] = (rng.integers(-300, 300, x.size)[::7] + 0.5).astype(np.float32) * scale
    x.flat[::11] = 1e4 * np.sign(x.flat[::11])
    zp = 3 if dtype == "uint8" else -2
    x_before = x.copy()
    out, zk = quantize_nchw(x, scale, zp, dtype)
    q, _, _ = fc.quantize_tensor(x, scale=scale, zero_point=zp, dtype=dtype)
    np.testing.assert_array_equal(out.astype(np.int64), q.astype(np.int64) + (zk - zp))
    np.testing.assert_array_equal(x, x_before)


def test_int8_errors():
    x = np.zeros((1, 2, 4, 4), np.uint8)
    w = np.zeros((3, 2, 3, 3), np.int8)
    with pytest.raises(TypeError, match="int8 or uint8"):
        fc.int8_conv2d(x.astype(np.float32), 0.1, 0, w, 0.1)
    with pytest.raises(TypeError, match="4-D int8"):
        fc.int8_conv2d(x, 0.1, 0, w.astype(np.uint8), 0.1)
    with pytest.raises(ValueError, match="w_scale"):
        fc.int8_conv2d(x, 0.1, 0, w, np.ones(2))
    with pytest.raises(ValueError, match="x_zero_point"):
        fc.int8_conv2d(x, 0.1, 300, w, 0.1)
    with pytest.raises(ValueError, match=r"out_zero_point 200 is outside int8's range"):
        fc.int8_conv2d(x, 0.1, 0, w, 0.1, out_scale=0.1, out_zero_point=200)
    with pytest.raises(ValueError, match=r"out_zero_point -1 is outside uint8's range"):
        fc.int8_conv2d(x, 0.1, 0, w, 0.1, out_scale=0.1, out_zero_point=-1,
                       out_dtype="uint8")
    with pytest.raises(ValueError, match="x_scale"):
        fc.int8_conv2d(x, 0.0, 0, w, 0.1)
    with pytest.raises(ValueError, match="expected input with 2 channels"):
        fc.int8_conv2d(np.zeros((1, 3, 4, 4), np.uint8), 0.1, 0, w, 0.1)
    with pytest.raises(ValueError, match="activation"):
        fc.int8_conv2d(x, 0.1, 0, w, 0.1, activation="hardswish")
    with pytest.raises(ValueError, match="inner dimensions"):
        fc.int8_gemm(np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8))
    with pytest.raises(TypeError, match="int8 or uint8"):
        fc.int8_gemm(np.zeros((2, 3), np.int16), np.zeros((3, 2), np.int8))
    with pytest.raises(ValueError, match="dtype must be 'int8' or 'uint8'"):
        fc.quantize_tensor(np.zeros(3, np.float32), dtype="int4")
    with pytest.raises(ValueError, match="NaN"):
        fc.quantize_tensor(np.array([np.nan], np.float32))
    with pytest.raises(ValueError, match="scale must be positive"):
        fc.quantize_tensor(np.zeros(3, np.float32), scale=0.0)


@pytest.mark.skipif(not vnni.HAS_VNNI, reason="this CPU has no AVX-512 VNNI")
def test_vnni_kernel_emits_vpdpbusd():
    """The intrinsic really becomes vpdpbusd (compiled fresh: cached code has no assembly)."""
    from numba import njit

    @njit
    def dot(a, w, out):
        vnni.dot8x16_bcast(a, 0, 64, w, 0, 16, out)

    a = np.ones(8 * 64, np.uint8)
    w = np.ones(16 * 64, np.int8)
    out = np.zeros(128, np.int32)
    dot(a, w, out)
    np.testing.assert_array_equal(out, np.full(128, 64))
    asm = "".join(dot.inspect_asm().values())
    assert asm.count("vpdpbusd") >= 8 and "vpbroadcastd" in asm

    @njit
    def px(a, w, y, zw, scale, bias, res):  # 3 pixel vectors x 8 channels, 2 steps
        vnni.px3_epi(a, 0, 192, 2, w, 0, y, 0, 48, 48, 8, zw, scale, bias, 0, 0, res, 0)

    a = np.ones(2 * 192, np.uint8)
    w = np.ones(2 * 32, np.int8)
    y = np.zeros(8 * 48, np.float32)
    f = np.ones(8, np.float32)
    px(a, w, y, np.zeros(8, np.int32), f, f, y)
    np.testing.assert_array_equal(y, np.full(8 * 48, 9.0))   # 8 products + bias 1
    asm = "".join(px.inspect_asm().values())
    assert asm.count("vpdpbusd") >= 24   # weights broadcast: vpbroadcastd or {1to16}
    assert "vpbroadcastd" in asm or "{1to16}" in asm


def test_portable_int8_gemm_uses_multiply_add_pairs():
    """The portable kernel's int32(a) * int32(b) products become vpmaddwd (x86 with AVX2 or
    AVX-512BW), compiled fresh from the kernel's source (cached code has no assembly)."""
    import platform

    from numba import njit

    from fastconv.kernels.cpu import int8 as k8
    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip("x86 only")
    fresh = njit(k8.gemm_int8.py_func)
    a = np.ones((8, 64), np.int8)
    c = np.zeros((8, 8), np.int32)
    fresh(a, a, c)
    np.testing.assert_array_equal(c, np.full((8, 8), 64))
    asm = "".join(fresh.inspect_asm().values())
    assert "vpmaddwd" in asm
