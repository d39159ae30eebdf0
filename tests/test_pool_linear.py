"""Pooling, linear and batch norm against the float64 reference."""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from conftest import rel_err
from fastconv.kernels import reference as ref

import fastconv as fc

MAX_CASES = [  # kernel, stride, padding, dilation, ceil_mode, shape
    (2, None, 0, 1, False, (2, 3, 8, 8)),
    (3, 2, 1, 1, False, (1, 4, 9, 7)),
    (3, 2, 1, 1, True, (1, 4, 10, 10)),
    ((3, 2), (2, 1), (1, 0), (2, 1), False, (2, 2, 11, 6)),
    (3, 3, 1, 1, True, (1, 1, 1, 1)),
    (1, 1, 0, 1, False, (0, 3, 4, 4)),
]


@pytest.mark.parametrize("case", MAX_CASES)
def test_max_pool(rng, case):
    k, s, p, d, ceil_mode, shape = case
    x = rng.standard_normal(shape).astype(np.float32)
    y = fc.max_pool2d(x, k, s, p, d, ceil_mode)
    expected = ref.max_pool2d(x, k, s, p, d, ceil_mode)
    assert y.shape == expected.shape
    np.testing.assert_array_equal(y, expected.astype(np.float32))


AVG_CASES = [  # kernel, stride, padding, ceil_mode, count_include_pad, divisor_override, shape
    (2, None, 0, False, True, None, (2, 3, 8, 8)),
    (3, 2, 1, False, True, None, (1, 4, 9, 7)),
    (3, 2, 1, False, False, None, (1, 4, 9, 7)),
    (3, 2, 1, True, True, None, (1, 2, 10, 10)),
    (3, 2, 1, True, False, None, (1, 2, 10, 10)),
    ((3, 2), (1, 2), (1, 1), False, True, 5, (2, 2, 6, 5)),
]


@pytest.mark.parametrize("case", AVG_CASES)
def test_avg_pool(rng, case):
    k, s, p, ceil_mode, cip, div, shape = case
    x = rng.standard_normal(shape).astype(np.float32)
    y = fc.avg_pool2d(x, k, s, p, ceil_mode, cip, div)
    expected = ref.avg_pool2d(x, k, s, p, ceil_mode, cip, div)
    assert y.shape == expected.shape
    assert rel_err(y, expected) < 1e-5


@pytest.mark.parametrize("out", [1, 2, 3, (5, 3), (None, 2), 7])
def test_adaptive_avg_pool(rng, out):
    x = rng.standard_normal((2, 3, 7, 10)).astype(np.float32)
    y = fc.adaptive_avg_pool2d(x, out)
    expected = ref.adaptive_avg_pool2d(x, out if not isinstance(out, tuple) or out[0] else (7, out[1]))
    assert y.shape == expected.shape
    assert rel_err(y, expected) < 1e-5


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(off=st.integers(0, 40), n=st.integers(0, 200), seed=st.integers(0, 2 ** 16))
def test_row_sum(off, n, seed):
    """zmm.row_sum (16-lane sums, a masked last vector, lanes added pairwise): the sum of
    any run of a float32 array, every length around the 16-lane steps; nothing past the
    run is read into it (the values there are huge)."""
    from numba import njit

    from fastconv.kernels.cpu import zmm

    @njit
    def run(x, o, m):
        return zmm.row_sum(x, o, m)

    x = np.random.default_rng(seed).standard_normal(off + n + 40).astype(np.float32)
    x[:off] = 1e30
    x[off + n:] = -1e30
    got = run(x, off, n)
    want = x[off:off + n].astype(np.float64).sum()
    assert abs(got - want) <= 1e-6 * max(1.0, np.abs(x[off:off + n]).sum())


@pytest.mark.parametrize("shape", [(1, 1280, 7, 7), (3, 70, 1, 1), (2, 65, 13, 3), (0, 4, 5, 5),
                                   (1, 1, 1, 37)])
@pytest.mark.parametrize("layout", ["contiguous", "strided", "out"])
def test_global_avg_pool(rng, shape, layout):
    """Output 1x1: the flat global kernel for contiguous arrays (tasks of 64 planes, a
    ragged last one), the adaptive kernel otherwise; both equal the mean."""
    x = rng.standard_normal(shape).astype(np.float32)
    if layout == "strided":
        x = np.ascontiguousarray(np.swapaxes(x, 2, 3)).swapaxes(2, 3)
        assert not x.flags.c_contiguous or x.size <= 1 or 1 in shape[2:]
    before = x.copy()
    out = np.full(shape[:2] + (1, 1), np.nan, np.float32) if layout == "out" else None
    y = fc.adaptive_avg_pool2d(x, 1, out=out)
    assert out is None or y is out or np.shares_memory(y, out)
    expected = ref.adaptive_avg_pool2d(x, 1)
    assert y.shape == expected.shape
    assert np.array_equal(x, before)
    if y.size:
        assert rel_err(y, expected) < 1e-5


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dh=st.integers(1, 2), dw=st.integers(1, 2), ceil=st.booleans(), h=st.integers(1, 12),
       w=st.integers(1, 12), nan=st.booleans(), data=st.data())
def test_max_pool_any_geometry(rng, kh, kw, sh, sw, dh, dw, ceil, h, w, nan, data):
    """The separable max pool (vertical max, unit-stride horizontal max, strided
    pick) against the reference for every stride, dilation, padding and ceil
    mode, NaN propagating from anywhere in a window."""
    ph = data.draw(st.integers(0, kh // 2))
    pw = data.draw(st.integers(0, kw // 2))
    if h + 2 * ph < dh * (kh - 1) + 1 or w + 2 * pw < dw * (kw - 1) + 1:
        return
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    if nan:
        x[1, 2, rng.integers(h), rng.integers(w)] = np.nan
    y = fc.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil)
    e = ref.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil)
    assert y.shape == e.shape
    np.testing.assert_array_equal(y, e)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       dh=st.integers(1, 2), dw=st.integers(1, 2), ceil=st.booleans(), h=st.integers(1, 12),
       w=st.integers(1, 70), signed=st.booleans(), data=st.data())
def test_max_pool_of_integers(rng, kh, kw, sh, sw, dh, dw, ceil, h, w, signed, data):
    """uint8 / int8 tensors (a quantized model's) pool in their own type, the padding never
    winning: the float reference's values (the type's minimum for a window that holds
    only padding), the input untouched, into ``out`` too."""
    ph = data.draw(st.integers(0, kh // 2))
    pw = data.draw(st.integers(0, kw // 2))
    if h + 2 * ph < dh * (kh - 1) + 1 or w + 2 * pw < dw * (kw - 1) + 1:
        return
    dt = np.int8 if signed else np.uint8
    info = np.iinfo(dt)
    x = rng.integers(info.min, info.max + 1, (2, 3, h, w)).astype(dt)
    x[0, 0] = info.min   # a plane of the type's minimum: the padding must not show
    keep = x.copy()
    y = fc.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil)
    e = ref.max_pool2d(x.astype(np.float32), (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil)
    e = np.where(np.isneginf(e), info.min, e)   # a window all padding: the type's minimum
    assert y.dtype == dt and y.shape == e.shape
    np.testing.assert_array_equal(y, e)
    np.testing.assert_array_equal(x, keep)
    out = np.empty_like(y)
    assert fc.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil, out=out) is out
    np.testing.assert_array_equal(out, e)
    with pytest.raises(ValueError, match="max_pool2d: out must be"):
        fc.max_pool2d(x, (kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil,
                      out=np.empty(y.shape, np.float32))


@pytest.mark.parametrize("w", [1, 2, 3, 15, 16, 17, 31, 32, 33, 34, 63, 64, 65, 112])
@pytest.mark.parametrize("pad, dh, ceil", [(1, 1, False), (0, 1, False), (1, 1, True),
                                            (0, 2, True), (1, 2, False)])
def test_max_pool_3x3_stride2_rows(rng, w, pad, dh, ceil):
    """ResNet's 3x3 stride-2 pool runs as whole vector rows (max_row3x3_s2): every output
    width around the 16-lane steps, edge windows, padded and dilated rows; NaN anywhere in
    a window wins and ties keep the first value (-0.0 before 0.0 stays -0.0), bit for bit
    as the reference."""
    h = 9
    if w + 2 * pad < 3 or h + 2 * pad < 2 * dh + 1:
        return
    x = rng.standard_normal((2, 3, h, w)).astype(np.float32)
    x[0, 1] = np.where(rng.random((h, w)) < 0.5, np.float32(-0.0), np.float32(0.0))
    x[1, 0].flat[rng.integers(0, h * w, 3)] = np.nan
    x[1, 2, :, -1] = np.nan  # the last column: the windows that need the step's next column
    y = fc.max_pool2d(x, 3, 2, pad, (dh, 1), ceil)
    e = ref.max_pool2d(x, 3, 2, pad, (dh, 1), ceil).astype(np.float32)
    assert y.shape == e.shape
    np.testing.assert_array_equal(np.isnan(y), np.isnan(e))
    ok = ~np.isnan(e)
    np.testing.assert_array_equal(y[ok], e[ok])
    np.testing.assert_array_equal(np.signbit(y[ok]), np.signbit(e[ok]))


def test_max_pool_nan_propagates(rng):
    x = rng.standard_normal((1, 1, 4, 4)).astype(np.float32)
    x[0, 0, 1, 1] = np.nan
    y = fc.max_pool2d(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


@pytest.mark.parametrize("shape", [(1, 7), (5, 33), (0, 7), (3, 2, 7), (20, 33), (9, 7)])
@pytest.mark.parametrize("activation", [None, "relu", "relu6"])
def test_linear(rng, shape, activation):
    """Up to LINEAR_ROWS_MAX rows: a dot per weight row; more: the SGEMM tasks."""
    x = rng.standard_normal(shape).astype(np.float32)
    out_f = 33 if shape[-1] == 7 else 5
    w = rng.standard_normal((out_f, shape[-1])).astype(np.float32)
    b = rng.standard_normal(out_f).astype(np.float32)
    y = fc.linear(x, w, b, activation=activation)
    expected = ref.activation(ref.linear(x, w, b), activation)
    assert y.shape == expected.shape
    assert rel_err(y, expected) < 1e-5


def test_linear_strided_operands(rng):
    x = rng.standard_normal((3, 40)).astype(np.float32)[:, ::2]
    w = rng.standard_normal((20, 17)).astype(np.float32).T  # (17, 20), not contiguous
    x0, w0 = x.copy(), w.copy()
    for rows in (x[:2], np.concatenate([x] * 4)):  # both paths
        assert rel_err(fc.linear(rows, w), ref.linear(rows, w)) < 1e-5
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(w, w0)


def test_linear_large(rng):
    x = rng.standard_normal((8, 1000)).astype(np.float32)
    w = rng.standard_normal((1000, 1000)).astype(np.float32)
    assert rel_err(fc.linear(x, w), ref.linear(x, w)) < 1e-4


def test_batch_norm(rng):
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    mean, var = rng.standard_normal(3), rng.uniform(0.5, 2, 3)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    y = fc.batch_norm(x, mean, var, gamma, beta)
    assert rel_err(y, ref.batch_norm(x, mean, var, gamma, beta)) < 1e-5
