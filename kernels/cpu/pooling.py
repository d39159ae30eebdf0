"""Pooling kernels: max, average and adaptive average over NCHW planes.

Window (p, q) of a plane covers rows p*sh - ph + i*dh, i < kh, and columns
q*sw - pw + j*dw, j < kw; positions outside the plane are padding.

    max:  y = max over the in-plane positions (padding is -inf); NaN wins, as in PyTorch
    avg:  y = sum over in-plane positions / divisor, divisor = divisor_override, or the
          window clipped to the padded plane (count_include_pad), or the in-plane count
    adaptive avg: bin p spans rows [floor(p*H/OH), ceil((p+1)*H/OH)), likewise columns

Work is split over (n, c) planes and output rows.
"""
import numpy as np
from numba import njit, prange

from . import FASTMATH

NEG_INF = np.float32(-np.inf)


@njit(inline="always")
def _col_range(OW, W, sw, off):
    """Output columns q with 0 <= q*sw + off < W, as [q0, q1)."""
    q0 = 0
    if off < 0:
        q0 = (-off + sw - 1) // sw
    q1 = (W - 1 - off) // sw + 1 if W - 1 - off >= 0 else 0
    return q0, min(max(q1, q0), OW)


@njit(parallel=True, cache=True)
def max_pool2d(x, y, kh, kw, sh, sw, ph, pw, dh, dw):
    """Max pooling of x (N, C, H, W) into y (N, C, OH, OW).

    Row-wise: each output row starts at -inf and takes the elementwise max with
    every in-plane (i, j) tap's strided input row, so the inner loop is a
    branch-free select over q.  A NaN wins (v != v), as in PyTorch.
    """
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for t in prange(N * C * OH):
        p = t % OH
        nc = t // OH
        n = nc // C
        c = nc % C
        plane = x[n, c]
        yrow = y[n, c, p]
        for q in range(OW):
            yrow[q] = NEG_INF
        for i in range(kh):
            hi = p * sh - ph + i * dh
            if hi < 0 or hi >= H:
                continue
            xrow = plane[hi]
            for j in range(kw):
                off = j * dw - pw
                q0, q1 = _col_range(OW, W, sw, off)
                # slices indexed by the bare loop variable (no wraparound checks)
                ys = yrow[q0:q1]
                xs = xrow[q0 * sw + off:]
                if sw == 1:
                    for u in range(q1 - q0):
                        v = xs[u]
                        cur = ys[u]
                        ys[u] = v if (v > cur) | (v != v) else cur
                elif sw == 2:  # a constant stride lets LLVM vectorize with shuffles
                    for u in range(q1 - q0):
                        v = xs[2 * u]
                        cur = ys[u]
                        ys[u] = v if (v > cur) | (v != v) else cur
                else:
                    for u in range(q1 - q0):
                        v = xs[u * sw]
                        cur = ys[u]
                        ys[u] = v if (v > cur) | (v != v) else cur
        # a NaN already in yrow stays: neither v > nan nor a non-NaN v != v replaces it


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def avg_pool2d(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    """Average pooling of x (N, C, H, W) into y (N, C, OH, OW); divisor_override 0 = none.

    Row-wise sums over the in-plane taps, then one division per output by the
    PyTorch divisor of its window.
    """
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for t in prange(N * C * OH):
        p = t % OH
        nc = t // OH
        n = nc // C
        c = nc % C
        plane = x[n, c]
        yrow = y[n, c, p]
        for q in range(OW):
            yrow[q] = 0.0
        h0 = p * sh - ph
        h1 = min(h0 + kh, H + ph)
        hc0 = max(h0, 0)
        hc1 = min(h1, H)
        for hi in range(hc0, hc1):
            xrow = plane[hi]
            for j in range(kw):
                off = j - pw
                q0, q1 = _col_range(OW, W, sw, off)
                ys = yrow[q0:q1]
                xs = xrow[q0 * sw + off:]
                if sw == 1:
                    for u in range(q1 - q0):
                        ys[u] += xs[u]
                elif sw == 2:
                    for u in range(q1 - q0):
                        ys[u] += xs[2 * u]
                else:
                    for u in range(q1 - q0):
                        ys[u] += xs[u * sw]
        for q in range(OW):
            w0 = q * sw - pw
            w1 = min(w0 + kw, W + pw)
            if divisor_override > 0:
                div = divisor_override
            elif count_include_pad:
                div = (h1 - h0) * (w1 - w0)
            else:
                div = (hc1 - hc0) * (min(w1, W) - max(w0, 0))
            yrow[q] = yrow[q] / np.float32(div)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def adaptive_avg_pool2d(x, y):
    """Adaptive average pooling of x (N, C, H, W) into y (N, C, OH, OW)."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for t in prange(N * C * OH):
        p = t % OH
        nc = t // OH
        n = nc // C
        c = nc % C
        plane = x[n, c]
        h0 = (p * H) // OH
        h1 = ((p + 1) * H + OH - 1) // OH
        for q in range(OW):
            w0 = (q * W) // OW
            w1 = ((q + 1) * W + OW - 1) // OW
            acc = np.float32(0.0)
            for i in range(h0, h1):
                for j in range(w0, w1):
                    acc += plane[i, j]
            y[n, c, p, q] = acc / np.float32((h1 - h0) * (w1 - w0))
