"""Direct convolution: the loop nest of the definition, blocked for the cache.

    y[n, k, p, q] = act(b[k] + sum_{c, r, s} xp[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw] * w[k, c, r, s])

xp is the zero-padded input (N, C, HP, WP), w is (K, Cg, R, S) with Cg = C / groups,
g = k // (K / groups).  Work is split over (n, group, block of KB output channels,
output row); each task keeps KB output rows hot in L1 and streams one input row per
(c, r), so the innermost loop over the output width q is a unit-stride FMA chain
(a strided gather when sw > 1) that LLVM vectorizes.
"""
import numpy as np
from numba import njit, prange

from . import FASTMATH
from .epilogue import activate

KB = 4  # output channels per task: 4 FMAs per input load


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_direct(xp, w, b, y, sh, sw, dh, dw, groups, act):
    """Direct conv of padded xp with w into y (N, K, OH, OW); bias and activation fused."""
    N = xp.shape[0]
    K, Cg, R, S = w.shape
    OH, OW = y.shape[2], y.shape[3]
    Kg = K // groups
    nkb = (Kg + KB - 1) // KB
    for t in prange(N * groups * nkb * OH):
        p = t % OH
        rest = t // OH
        kb = rest % nkb
        rest = rest // nkb
        g = rest % groups
        n = rest // groups
        k0 = g * Kg + kb * KB
        k1 = min(k0 + KB, (g + 1) * Kg)
        for k in range(k0, k1):
            yk = y[n, k, p]
            bk = b[k]
            for q in range(OW):
                yk[q] = bk
        if k1 - k0 == KB:
            y0 = y[n, k0, p]
            y1 = y[n, k0 + 1, p]
            y2 = y[n, k0 + 2, p]
            y3 = y[n, k0 + 3, p]
            for c in range(Cg):
                for r in range(R):
                    xrow = xp[n, g * Cg + c, p * sh + r * dh]
                    for s in range(S):
                        w0 = w[k0, c, r, s]
                        w1 = w[k0 + 1, c, r, s]
                        w2 = w[k0 + 2, c, r, s]
                        w3 = w[k0 + 3, c, r, s]
                        off = s * dw
                        for q in range(OW):
                            v = xrow[off + q * sw]
                            y0[q] += w0 * v
                            y1[q] += w1 * v
                            y2[q] += w2 * v
                            y3[q] += w3 * v
        else:
            for k in range(k0, k1):
                yk = y[n, k, p]
                for c in range(Cg):
                    for r in range(R):
                        xrow = xp[n, g * Cg + c, p * sh + r * dh]
                        for s in range(S):
                            wv = w[k, c, r, s]
                            off = s * dw
                            for q in range(OW):
                                yk[q] += wv * xrow[off + q * sw]
        if act != 0:
            for k in range(k0, k1):
                yk = y[n, k, p]
                for q in range(OW):
                    yk[q] = activate(yk[q], act)
