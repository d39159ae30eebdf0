"""Fake quantization: the QuantizeLinear -> DequantizeLinear pairs of a QDQ graph in one pass.

A QDQ model (onnxruntime's ``quantize_static`` default, PyTorch's quantized export) marks
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


@njit(parallel=True, cache=True)
def fake_quant_add(a, b, y, pa, pb, po, relu):
    """y[i] = fq_o(act(fq_a(a[i]) + fq_b(b[i]))) over flat float32 arrays of one size.

    pa, pb, po: float32 (s, z, lo, hi, on) each, a step left out where on is 0; relu 1
    clamps the sum at zero before fq_o.  The add of a QDQ residual block (both operands
    and the sum on int8 grids) in one pass."""
    n = y.shape[0]
    sa, za, la, ha, ona = pa[0], pa[1], pa[2], pa[3], pa[4] != 0
    sb, zb, lb, hb, onb = pb[0], pb[1], pb[2], pb[3], pb[4] != 0
    so, zo, lo, ho, ono = po[0], po[1], po[2], po[3], po[4] != 0
    for t in prange((n + BLOCK - 1) // BLOCK):
        c = t * BLOCK
        As, bs, ys = a[c:min(n, c + BLOCK)], b[c:min(n, c + BLOCK)], y[c:min(n, c + BLOCK)]
        for i in range(ys.size):
            u = _fq(As[i], sa, za, la, ha) if ona else As[i]
            v = _fq(bs[i], sb, zb, lb, hb) if onb else bs[i]
            w = u + v
            if relu and w < 0:
                w = np.float32(0)
            ys[i] = _fq(w, so, zo, lo, ho) if ono else w
