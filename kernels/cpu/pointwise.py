"""Pointwise (1x1) convolution: a straight GEMM per image and group.

    y[n, k, p, q] = act(b[k] + sum_c w[k, c] * x[n, g*Cg + c, p*sh, q*sw] (+ res[n, k, p, q]))

Stride 1: the input plane block x[n, g*Cg:(g+1)*Cg] viewed as (Cg, H*W) already
is the right-hand matrix, so SGEMM reads it in place and writes straight into
the output block y[n, k0:k1] (N, K, H*W); tasks split (n, g, output-channel
block) and the epilogue runs in place while the block is hot.

Stride > 1: BLAS cannot read a column-strided matrix, so each task gathers the
subsampled pixels of its pixel tile, (Cg, T), into its thread's workspace
(1/(sh*sw) of the input, no R*S blow-up) and multiplies that.  BLAS runs
single-threaded inside Numba's tasks (see fastconv/_runtime.py).
"""
import numba
import numpy as np
from numba import njit, prange

from . import FASTMATH
from .epilogue import activate


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_conv2d(x3, wmat, b, y3, groups, act, res3, has_res, kblock):
    """Stride-1 1x1 conv: x3 (N, C, P), wmat (K, Cg), y3/res3 (N, K, P)."""
    N, C, P = x3.shape
    K = wmat.shape[0]
    Kg = K // groups
    Cg = C // groups
    nkb = (Kg + kblock - 1) // kblock
    for t in prange(N * groups * nkb):
        kb = t % nkb
        rest = t // nkb
        g = rest % groups
        n = rest // groups
        k0 = g * Kg + kb * kblock
        k1 = min(k0 + kblock, (g + 1) * Kg)
        out = y3[n, k0:k1]
        np.dot(wmat[k0:k1], x3[n, g * Cg:(g + 1) * Cg], out)
        for k in range(k1 - k0):
            bk = b[k0 + k]
            row = out[k]
            if has_res:
                rrow = res3[n, k0 + k]
                for j in range(P):
                    row[j] = activate(row[j] + bk + rrow[j], act)
            else:
                for j in range(P):
                    row[j] = activate(row[j] + bk, act)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_conv2d_strided(x, wmat, b, y3, OW, sh, sw, groups, act, res3, has_res,
                             tile, cols_ws, acc_ws):
    """Strided 1x1 conv: x (N, C, H, W), wmat (K, Cg), y3/res3 (N, K, OH*OW).

    cols_ws: (threads, >= Cg*tile); acc_ws: (threads, >= Kg*tile).
    """
    N, C = x.shape[0], x.shape[1]
    K, Cg = wmat.shape
    P = y3.shape[2]
    Kg = K // groups
    ntiles = (P + tile - 1) // tile
    for t in prange(N * groups * ntiles):
        ti = t % ntiles
        rest = t // ntiles
        g = rest % groups
        n = rest // groups
        p0 = ti * tile
        T = min(tile, P - p0)
        tid = numba.get_thread_id()
        cols = cols_ws[tid, :Cg * T].reshape((Cg, T))
        for c in range(Cg):
            plane = x[n, g * Cg + c]
            crow = cols[c]
            j = 0
            p = p0 // OW
            q = p0 % OW
            while j < T:
                seg = min(OW - q, T - j)
                dst = crow[j:j + seg]
                src = plane[p * sh, q * sw:]
                if sw == 2:
                    for u in range(seg):
                        dst[u] = src[2 * u]
                else:
                    for u in range(seg):
                        dst[u] = src[u * sw]
                j += seg
                p += 1
                q = 0
        acc = acc_ws[tid, :Kg * T].reshape((Kg, T))
        np.dot(wmat[g * Kg:(g + 1) * Kg], cols, acc)
        for k in range(Kg):
            kk = g * Kg + k
            bk = b[kk]
            yrow = y3[n, kk, p0:p0 + T]
            arow = acc[k]
            if has_res:
                rrow = res3[n, kk, p0:p0 + T]
                for j in range(T):
                    yrow[j] = activate(arow[j] + bk + rrow[j], act)
            else:
                for j in range(T):
                    yrow[j] = activate(arow[j] + bk, act)
