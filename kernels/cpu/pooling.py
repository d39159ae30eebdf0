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


@njit(parallel=True, cache=True)
def max_pool2d(x, y, kh, kw, sh, sw, ph, pw, dh, dw):
    """Max pooling of x (N, C, H, W) into y (N, C, OH, OW)."""
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
            m = NEG_INF
            for i in range(kh):
                hi = p * sh - ph + i * dh
                if hi < 0 or hi >= H:
                    continue
                for j in range(kw):
                    wi = q * sw - pw + j * dw
                    if wi < 0 or wi >= W:
                        continue
                    v = plane[hi, wi]
                    if v > m or v != v:
                        m = v
                if m != m:
                    break
            yrow[q] = m


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def avg_pool2d(x, y, kh, kw, sh, sw, ph, pw, count_include_pad, divisor_override):
    """Average pooling of x (N, C, H, W) into y (N, C, OH, OW); divisor_override 0 = none."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    for t in prange(N * C * OH):
        p = t % OH
        nc = t // OH
        n = nc // C
        c = nc % C
        plane = x[n, c]
        yrow = y[n, c, p]
        h0 = p * sh - ph
        h1 = min(h0 + kh, H + ph)
        hc0 = max(h0, 0)
        hc1 = min(h1, H)
        for q in range(OW):
            w0 = q * sw - pw
            w1 = min(w0 + kw, W + pw)
            wc0 = max(w0, 0)
            wc1 = min(w1, W)
            acc = np.float32(0.0)
            for i in range(hc0, hc1):
                for j in range(wc0, wc1):
                    acc += plane[i, j]
            if divisor_override > 0:
                div = divisor_override
            elif count_include_pad:
                div = (h1 - h0) * (w1 - w0)
            else:
                div = (hc1 - hc0) * (wc1 - wc0)
            yrow[q] = acc / np.float32(div)


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
