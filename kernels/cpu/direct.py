"""Direct convolution: the loop nest of the definition, blocked for the cache.

    y[n, k, p, q] = act(b[k] + sum_{c, r, s} xp[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw] * w[k, c, r, s])

xp is the zero-padded input (N, C, HP, WP), w is (K, Cg, R, S) with Cg = C / groups,
g = k // (K / groups).  Work is split over (n, group, block of KB output channels,
output row).  Each task accumulates KB output rows in its thread's L1-resident
workspace ``acc`` (KB, OW) and streams one input row per (c, r): the innermost loop
over the output width q does KB FMAs per input load and is unit-stride when sw == 1
(a separate gather loop serves sw > 1), so LLVM vectorizes it.  Bias, residual and
activation are fused.  The branches on
the block size and the stride sit outside the reduction loops so that every inner
loop is a straight-line FMA chain.
"""
import numba
from numba import njit, prange

from . import FASTMATH
from .epilogue import activate

KB = 4  # output channels per task: 4 FMAs per input load


@njit(inline="always")
def _rows_block4_strided(acc, xp, w, n, cin0, k0, p, sh, sw, dh, dw, OW):
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    for c in range(Cg):
        plane = xp[n, cin0 + c]
        for r in range(R):
            xrow = plane[p * sh + r * dh]
            for s in range(S):
                w0 = w[k0, c, r, s]
                w1 = w[k0 + 1, c, r, s]
                w2 = w[k0 + 2, c, r, s]
                w3 = w[k0 + 3, c, r, s]
                xs = xrow[s * dw:]
                for q in range(OW):
                    v = xs[q * sw]
                    acc[0, q] += w0 * v
                    acc[1, q] += w1 * v
                    acc[2, q] += w2 * v
                    acc[3, q] += w3 * v


@njit(inline="always")
def _rows_single(acc, xp, w, n, cin0, k0, nk, p, sh, sw, dh, dw, OW):
    Cg, R, S = w.shape[1], w.shape[2], w.shape[3]
    for k in range(nk):
        a = acc[k]
        for c in range(Cg):
            plane = xp[n, cin0 + c]
            for r in range(R):
                xrow = plane[p * sh + r * dh]
                for s in range(S):
                    wv = w[k0 + k, c, r, s]
                    if sw == 1:
                        xs = xrow[s * dw:s * dw + OW]
                        for q in range(OW):
                            a[q] += wv * xs[q]
                    else:
                        xs = xrow[s * dw:]
                        for q in range(OW):
                            a[q] += wv * xs[q * sw]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_direct(xp, w, b, y, sh, sw, dh, dw, groups, act, res, has_res, acc_ws):
    """Direct conv of padded xp with w into y (N, K, OH, OW); bias and activation fused.

    acc_ws: (threads, KB, >= OW) float32 workspace; res (N, K, OH, OW) is added before
    the activation when has_res.
    """
    N = xp.shape[0]
    K, Cg = w.shape[0], w.shape[1]
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
        nk = min(KB, (g + 1) * Kg - k0)
        acc = acc_ws[numba.get_thread_id()]
        for k in range(nk):
            bk = b[k0 + k]
            for q in range(OW):
                acc[k, q] = bk
        if nk == KB and sw == 1:
            for c in range(Cg):
                plane = xp[n, g * Cg + c]
                for r in range(w.shape[2]):
                    xrow = plane[p * sh + r * dh]
                    for s in range(w.shape[3]):
                        w0 = w[k0, c, r, s]
                        w1 = w[k0 + 1, c, r, s]
                        w2 = w[k0 + 2, c, r, s]
                        w3 = w[k0 + 3, c, r, s]
                        xs = xrow[s * dw:s * dw + OW]
                        for q in range(OW):
                            v = xs[q]
                            acc[0, q] += w0 * v
                            acc[1, q] += w1 * v
                            acc[2, q] += w2 * v
                            acc[3, q] += w3 * v
        elif nk == KB:
            _rows_block4_strided(acc, xp, w, n, g * Cg, k0, p, sh, sw, dh, dw, OW)
        else:
            _rows_single(acc, xp, w, n, g * Cg, k0, nk, p, sh, sw, dh, dw, OW)
        for k in range(nk):
            yrow = y[n, k0 + k, p]
            if has_res:
                rrow = res[n, k0 + k, p]
                for q in range(OW):
                    yrow[q] = activate(acc[k, q] + rrow[q], act)
            else:
                for q in range(OW):
                    yrow[q] = activate(acc[k, q], act)
