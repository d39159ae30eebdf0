"""Fake quantization: the QuantizeLinear -> DequantizeLinear pairs of a QDQ graph in one pass.

A QDQ model (onnxruntime's ``quantize_static`` writes this form by default) marks
every int8 tensor with a per-tensor pair

    q = saturate(round_half_even(x / s) + z)          QuantizeLinear
    y = (q - z) * s                                   DequantizeLinear

whose float result is x snapped to the int8 grid.  The convolutions and linears between
such pairs run on the int8 kernels (fastconv.optimize turns them into qconv / qlinear nodes
that quantize their float input themselves); what is left are the pairs other ops read (a
residual add, a pool, the model's output), computed here in one parallel pass each instead
of two NumPy passes and an integer temporary.  The arithmetic is ONNX's, float32, divide
and all, so a pair computes exactly what the two NumPy ops compute.
"""
import numpy as np
from numba import njit, prange

BLOCK = 4096   # elements a task: a few pages, vector loops inside (over slices: indexing the
#               whole arrays inside the parallel loop kept LLVM from vectorizing, 6x slower)


@njit(inline="always")
def _fq(v, s, z, lo, hi):
    """(min(max(rint(v / s) + z, lo), hi) - z) * s in float32 (lo, hi: the integer type's
    range; NaN stays NaN)."""
    q = np.rint(v / s) + z
    q = lo if q < lo else q
    q = hi if q > hi else q
    return (q - z) * s


@njit(parallel=True, cache=True)
def fake_quant(x, y, s, z, lo, hi):
    """y[i] = fq(x[i]) over flat float32 arrays (y may be x)."""
    n = x.shape[0]
    for t in prange((n + BLOCK - 1) // BLOCK):
        a = t * BLOCK
        xs, ys = x[a:min(n, a + BLOCK)], y[a:min(n, a + BLOCK)]
        for i in range(xs.size):
            ys[i] = _fq(xs[i], s, z, lo, hi)


@njit(inline="always")
def _operand(v, p, mode):
    """An add operand: v as is (mode 0), snapped to its grid (1), or an integer on its grid
    read as the float it stands for, (v - z) * s (2)."""
    v = np.float32(v)
    if mode == 1:
        return _fq(v, p[0], p[1], p[2], p[3])
    if mode == 2:
        return (v - p[1]) * p[0]
    return v


@njit(parallel=True, cache=True)
def fake_quant_add(a, b, y, pa, pb, po, relu):
    """y[i] = q_o(act(q_a(a[i]) + q_b(b[i]))) over flat arrays of one size: the add of a
    QDQ residual block (both operands and the sum on int8 grids) in one pass.

    pa, pb, po: float32 (s, z, lo, hi, mode) each.  An operand's mode: 0 read as is, 1
    snapped to its grid (fq), 2 an integer array on its grid, read as (q - z) * s (the
    fq value it stands for).  The sum's: 0 stored as is, 1 snapped (fq), 2 stored as its
    integer, clamp(rint(w / s) + z) (y an int8 or uint8 array).  relu 1 clamps the sum at
    zero first."""
    n = y.shape[0]
    ma, mb, mo = int(pa[4]), int(pb[4]), int(po[4])
    so, zo, lo, ho = po[0], po[1], po[2], po[3]
    for t in prange((n + BLOCK - 1) // BLOCK):
        c = t * BLOCK
        As, bs, ys = a[c:min(n, c + BLOCK)], b[c:min(n, c + BLOCK)], y[c:min(n, c + BLOCK)]
        for i in range(ys.size):
            w = _operand(As[i], pa, ma) + _operand(bs[i], pb, mb)
            if relu and w < 0:
                w = np.float32(0)
            if mo == 2:
                q = np.rint(w / so) + zo
                q = lo if q < lo else q
                ys[i] = ho if q > ho else q
            elif mo == 1:
                ys[i] = _fq(w, so, zo, lo, ho)
            else:
                ys[i] = w


@njit(parallel=True, cache=True)
def quant_add(a, b, y, pa, pb, po, relu):
    """fake_quant_add with both operands and the sum integer arrays on their grids (modes 2,
    2, 2), the loop free of mode branches (2x faster than the general one on ResNet-50's
    uint8 adds): y[i] = clamp(rint(act((a[i] - za) * sa + (b[i] - zb) * sb) / so) + zo)."""
    n = y.shape[0]
    sa, za, sb, zb = pa[0], pa[1], pb[0], pb[1]
    so, zo, lo, hi = po[0], po[1], po[2], po[3]
    zero = np.float32(0)
    for t in prange((n + BLOCK - 1) // BLOCK):
        c = t * BLOCK
        As, bs, ys = a[c:min(n, c + BLOCK)], b[c:min(n, c + BLOCK)], y[c:min(n, c + BLOCK)]
        for i in range(ys.size):
            w = (np.float32(As[i]) - za) * sa + (np.float32(bs[i]) - zb) * sb
            if relu:
                w = max(w, zero)
            q = np.rint(w / so) + zo
            q = lo if q < lo else q
            ys[i] = hi if q > hi else q
