"""Pointwise (1x1) convolution: a straight GEMM per image and group.

    y[n, k, p, q] = act(b[k] + sum_c w[k, c] * x[n, g*Cg + c, p*sh, q*sw] (+ res[n, k, p, q]))

Stride 1: the input block x[n, g*Cg:(g+1)*Cg] viewed as (Cg, H*W) already is
the right-hand matrix.  A task (n, g, pixel tile, output-channel block) runs
SGEMM on its sub-blocks in place -- leading dimension H*W for the input tile
and for the output tile it writes straight into y -- then runs the epilogue on
that tile while it is hot.  No copy at all.

Stride > 1: BLAS cannot read a column-strided matrix, so each task first
gathers the subsampled pixels of its tile, (Cg, T), into its thread's
workspace (1/(sh*sw) of the input, no R*S blow-up).  BLAS runs
single-threaded inside Numba's tasks (see fastconv/_runtime.py).
"""
import numba
from numba import njit, prange

from . import FASTMATH
from .blas import sgemm_rm
from .epilogue import epilogue_tile


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_conv2d(x3, wmat, b, y3, groups, act, res3, has_res, tile, kblock, scal_ws):
    """Stride-1 1x1 conv: x3 (N, C, P), wmat (K, Cg), y3/res3 (N, K, P).

    tile: pixels per task; kblock: output channels per task; scal_ws: (threads, >= 2).
    """
    N, C, P = x3.shape
    K, Cg = wmat.shape
    Kg = K // groups
    ntiles = (P + tile - 1) // tile
    nkb = (Kg + kblock - 1) // kblock
    for t in prange(N * groups * ntiles * nkb):
        kb = t % nkb
        rest = t // nkb
        ti = rest % ntiles
        rest = rest // ntiles
        g = rest % groups
        n = rest // groups
        p0 = ti * tile
        T = min(tile, P - p0)
        k0 = g * Kg + kb * kblock
        k1 = min(k0 + kblock, (g + 1) * Kg)
        sgemm_rm(k1 - k0, T, Cg, wmat, k0 * Cg, Cg, x3, (n * C + g * Cg) * P + p0, P,
                 y3, (n * K + k0) * P + p0, P, 0.0, scal_ws[numba.get_thread_id()])
        epilogue_tile(y3, n, k0, k1, p0, T, b, act, res3, has_res)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_conv2d_strided(x, wmat, b, y3, OW, sh, sw, groups, act, res3, has_res,
                             tile, cols_ws, scal_ws):
    """Strided 1x1 conv: x (N, C, H, W), wmat (K, Cg), y3/res3 (N, K, OH*OW).

    cols_ws: (threads, >= Cg*tile); scal_ws: (threads, >= 2).
    """
    N = x.shape[0]
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
        cols = cols_ws[tid, :Cg * T]
        for c in range(Cg):
            plane = x[n, g * Cg + c]
            crow = cols[c * T:(c + 1) * T]
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
        k0 = g * Kg
        sgemm_rm(Kg, T, Cg, wmat, k0 * Cg, Cg, cols, 0, T, y3, (n * K + k0) * P + p0, P,
                 0.0, scal_ws[tid])
        epilogue_tile(y3, n, k0, k0 + Kg, p0, T, b, act, res3, has_res)
