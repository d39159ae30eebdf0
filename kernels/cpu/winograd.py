"""Winograd minimal filtering F(m x m, 3 x 3) for 3x3 stride-1 convolutions (Lavin & Gray 2016).

An output tile Y (m x m) of one channel pair is computed from an input tile d
(a x a, a = m + 2) and a filter g (3 x 3) as

    Y = A^T [ (G g G^T) .* (B^T d B) ] A

so the a*a elementwise products replace m*m*9 multiply-adds (2.25x fewer for
F(2x2), 4x fewer for F(4x4)).  Summed over input channels, the elementwise
product becomes a * a independent GEMMs in the transformed domain:

    U[xi, k, c] = (G g_kc G^T)[xi]                       filter transform, once per weight
    V[xi, c, t] = (B^T d_ct B)[xi]                        input transform, every tile t
    M[xi, k, t] = sum_c U[xi, k, c] V[xi, c, t]           a*a SGEMMs of K x C x tiles
                                                          (F(2x2) with enough tiles: on the
                                                          micro-kernel, transformed_gemms_packed)
    y tile      = A^T M[:, k, t] A  (+ bias, residual, activation)

Tiles t run over the whole batch, so the SGEMMs are batched across images.
Edge tiles read the zero padding the API layer adds to round the padded input
up to whole tiles, and their outputs beyond the image are not written.

Phases: (1) input transform, parallel over (n, c) planes; (2) the a*a*groups
SGEMMs, one per task, BLAS single-threaded; (3) output transform with the
fused epilogue, parallel over (n, k).  The 1-D transforms B^T and A^T are
written out (``bt2``, ``bt4``, ``at2``, ``at4``) and applied to vectors of the
tiles of one tile row, first down the tile's rows, then along its columns, so
every loop is a straight vectorizable sweep.  The filter transform G is applied
once per weight in float64 (``filter_transform``).

Transform matrices (wincnn's interpolation points 0, +-1 (, +-2), infinity):

    F(2x2, 3x3):  B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
                  A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]
    F(4x4, 3x3):  B^T = [[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                         [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]]
                  A^T = [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                         [0, 1, -1, 8, -8, 1]]
"""
import numba
import numpy as np
from numba import njit, prange

from . import FASTMATH
from .epilogue import store_row, store_row_res
from .zmm import NR, gemm_block_t

TWO = np.float32(2.0)
FOUR = np.float32(4.0)
FIVE = np.float32(5.0)
EIGHT = np.float32(8.0)


@njit(inline="always")
def bt2(d0, d1, d2, d3):
    """B^T d for F(2x2, 3x3)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


@njit(inline="always")
def bt4(d0, d1, d2, d3, d4, d5):
    """B^T d for F(4x4, 3x3)."""
    return (FOUR * d0 - FIVE * d2 + d4,
            d3 + d4 - FOUR * (d1 + d2),
            FOUR * (d1 - d2) + d4 - d3,
            TWO * (d3 - d1) + d4 - d2,
            TWO * (d1 - d3) + d4 - d2,
            FOUR * d1 - FIVE * d3 + d5)


@njit(inline="always")
def at2(m0, m1, m2, m3):
    """A^T m for F(2x2, 3x3)."""
    return m0 + m1 + m2, m1 - m2 - m3


@njit(inline="always")
def at4(m0, m1, m2, m3, m4, m5):
    """A^T m for F(4x4, 3x3)."""
    s12 = m1 + m2
    d12 = m1 - m2
    s34 = m3 + m4
    d34 = m3 - m4
    return m0 + s12 + s34, d12 + TWO * d34, s12 + FOUR * s34, d12 + EIGHT * d34 + m5


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def filter_transform(w, G, U):
    """U[i*a + j, k, c] = (G w[k, c] G^T)[i, j];  w: (K, Cg, 3, 3), G: (a, 3), U: (a*a, K, Cg)."""
    K, Cg = w.shape[0], w.shape[1]
    a = G.shape[0]
    for k in prange(K):
        tmp = np.empty((a, 3), np.float64)
        for c in range(Cg):
            g = w[k, c]
            for i in range(a):
                for j in range(3):
                    tmp[i, j] = G[i, 0] * g[0, j] + G[i, 1] * g[1, j] + G[i, 2] * g[2, j]
            for i in range(a):
                for j in range(a):
                    U[i * a + j, k, c] = tmp[i, 0] * G[j, 0] + tmp[i, 1] * G[j, 1] + tmp[i, 2] * G[j, 2]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def input_transform(xp, m, TH, TW, V, t_ws):
    """V[i*a + j, c, n*TH*TW + th*TW + tw] = (B^T d B)[i, j] for the input tile d at (th, tw).

    xp: tile-padded input (N, C, TH*m + 2, TW*m + 2); t_ws: (threads, a, a, >= TW + 2)
    (F(4x4) uses it as a flat scratch of 6*WP + 4*(TW + 1) floats).
    """
    N, C = xp.shape[0], xp.shape[1]
    WP = xp.shape[3]
    tiles = TH * TW
    for task in prange(N * C):
        n = task // C
        c = task % C
        tmp = t_ws[numba.get_thread_id()]
        flat = tmp.reshape(-1)
        plane = xp[n, c]
        for th in range(TH):
            r0 = th * m
            base = n * tiles + th * TW
            if m == 2:
                x0 = plane[r0]
                x1 = plane[r0 + 1]
                x2 = plane[r0 + 2]
                x3 = plane[r0 + 3]
                for j in range(4):
                    y0 = x0[j:]
                    y1 = x1[j:]
                    y2 = x2[j:]
                    y3 = x3[j:]
                    for t in range(TW):
                        u = bt2(y0[2 * t], y1[2 * t], y2[2 * t], y3[2 * t])
                        for i in range(4):
                            tmp[i, j, t] = u[i]
                for i in range(4):
                    v0 = V[i * 4, c, base:base + TW]
                    v1 = V[i * 4 + 1, c, base:base + TW]
                    v2 = V[i * 4 + 2, c, base:base + TW]
                    v3 = V[i * 4 + 3, c, base:base + TW]
                    ti = tmp[i]
                    for t in range(TW):
                        u = bt2(ti[0, t], ti[1, t], ti[2, t], ti[3, t])
                        v0[t] = u[0]
                        v1[t] = u[1]
                        v2[t] = u[2]
                        v3[t] = u[3]
            else:
                # F(4x4): first B^T down the six rows, along whole rows (unit stride);
                # then each transformed row is split into its four column phases
                # (ph_k[t] = row[4t + k]), so that B^T along the tiles' columns reads
                # ph_0[t], ph_1[t], ph_2[t], ph_3[t], ph_0[t+1], ph_1[t+1] -- unit stride
                # too.  (Reading row[4t + j] directly made every load a stride-4 gather.)
                x0 = plane[r0]
                x1 = plane[r0 + 1]
                x2 = plane[r0 + 2]
                x3 = plane[r0 + 3]
                x4 = plane[r0 + 4]
                x5 = plane[r0 + 5]
                u0 = flat[0:WP]
                u1 = flat[WP:2 * WP]
                u2 = flat[2 * WP:3 * WP]
                u3 = flat[3 * WP:4 * WP]
                u4 = flat[4 * WP:5 * WP]
                u5 = flat[5 * WP:6 * WP]
                for w in range(WP):
                    r = bt4(x0[w], x1[w], x2[w], x3[w], x4[w], x5[w])
                    u0[w] = r[0]
                    u1[w] = r[1]
                    u2[w] = r[2]
                    u3[w] = r[3]
                    u4[w] = r[4]
                    u5[w] = r[5]
                ph0 = flat[6 * WP:6 * WP + TW + 1]
                ph1 = flat[6 * WP + TW + 1:6 * WP + 2 * (TW + 1)]
                ph2 = flat[6 * WP + 2 * (TW + 1):6 * WP + 3 * (TW + 1)]
                ph3 = flat[6 * WP + 3 * (TW + 1):6 * WP + 4 * (TW + 1)]
                for i in range(6):
                    row = flat[i * WP:(i + 1) * WP]
                    for t in range(TW):
                        ph0[t] = row[4 * t]
                        ph1[t] = row[4 * t + 1]
                        ph2[t] = row[4 * t + 2]
                        ph3[t] = row[4 * t + 3]
                    ph0[TW] = row[4 * TW]
                    ph1[TW] = row[4 * TW + 1]
                    v0 = V[i * 6, c, base:base + TW]
                    v1 = V[i * 6 + 1, c, base:base + TW]
                    v2 = V[i * 6 + 2, c, base:base + TW]
                    v3 = V[i * 6 + 3, c, base:base + TW]
                    v4 = V[i * 6 + 4, c, base:base + TW]
                    v5 = V[i * 6 + 5, c, base:base + TW]
                    q0 = ph0[1:]
                    q1 = ph1[1:]
                    for t in range(TW):
                        u = bt4(ph0[t], ph1[t], ph2[t], ph3[t], q0[t], q1[t])
                        v0[t] = u[0]
                        v1[t] = u[1]
                        v2[t] = u[2]
                        v3[t] = u[3]
                        v4[t] = u[4]
                        v5[t] = u[5]


@njit(parallel=True, cache=True)
def transformed_gemms(U, V, M, groups):
    """M[xi, group g] = U[xi, group g] @ V[xi, group g] for every xi and group: a*a*groups SGEMMs."""
    XI, K, Cg = U.shape
    Kg = K // groups
    for task in prange(XI * groups):
        xi = task // groups
        g = task % groups
        np.dot(U[xi, g * Kg:(g + 1) * Kg], V[xi, g * Cg:(g + 1) * Cg], M[xi, g * Kg:(g + 1) * Kg])


@njit(parallel=True, cache=True)
def transformed_gemms_packed(wp, V, M, zeros, xp_ws, no_res):
    """M[xi] = U[xi] @ V[xi] for every xi (groups == 1) on fastconv's channel-vectorized
    micro-kernel (zmm.gemm_block_t: 7 tiles x 32 output channels a register tile)
    instead of SGEMM: one task per product.

    wp: (a*a, ceil(K/NR)*C*NR), U[xi] packed by zmm.pack_panels (width NR, chunk
    KC_T); zeros: K zeros (the kernel's bias); xp_ws (threads, >= KC_T*MP); no_res:
    a 1-element dummy (no residual here, nor activation: the output transform
    applies them).
    """
    XI, C, T = V.shape
    K = M.shape[1]
    npg = (K + NR - 1) // NR
    wf = wp.reshape(-1)
    for xi in prange(XI):
        gemm_block_t(wf, xi * npg * C * NR, npg, 0, C, V[xi].reshape(-1), 0, T, T,
                     M[xi].reshape(-1), 0, T, K, xp_ws[numba.get_thread_id()], zeros, 0, 0,
                     no_res, 0)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def output_transform(M, m, b, y, act, res, has_res, t_ws, row_ws):
    """y[n, k, tile (th, tw)] = act(A^T M[:, k, t] A + b[k] (+ res)), cropped to (OH, OW).

    M: (a*a, K, N*TH*TW); t_ws: (threads, a, a, >= TW); row_ws: (threads, m, >= TW*m).
    """
    N, K, OH, OW = y.shape
    TH = (OH + m - 1) // m
    TW = (OW + m - 1) // m
    tiles = TH * TW
    for task in prange(N * K):
        n = task // K
        k = task % K
        tid = numba.get_thread_id()
        tmp = t_ws[tid]
        rows = row_ws[tid]
        bk = b[k]
        for th in range(TH):
            base = n * tiles + th * TW
            if m == 2:
                for j in range(4):
                    m0 = M[j, k, base:base + TW]
                    m1 = M[4 + j, k, base:base + TW]
                    m2 = M[8 + j, k, base:base + TW]
                    m3 = M[12 + j, k, base:base + TW]
                    for t in range(TW):
                        u = at2(m0[t], m1[t], m2[t], m3[t])
                        tmp[0, j, t] = u[0]
                        tmp[1, j, t] = u[1]
                for r in range(2):
                    tr = tmp[r]
                    rr = rows[r]
                    for t in range(TW):
                        u = at2(tr[0, t], tr[1, t], tr[2, t], tr[3, t])
                        rr[2 * t] = u[0]
                        rr[2 * t + 1] = u[1]
            else:
                for j in range(6):
                    m0 = M[j, k, base:base + TW]
                    m1 = M[6 + j, k, base:base + TW]
                    m2 = M[12 + j, k, base:base + TW]
                    m3 = M[18 + j, k, base:base + TW]
                    m4 = M[24 + j, k, base:base + TW]
                    m5 = M[30 + j, k, base:base + TW]
                    for t in range(TW):
                        u = at4(m0[t], m1[t], m2[t], m3[t], m4[t], m5[t])
                        tmp[0, j, t] = u[0]
                        tmp[1, j, t] = u[1]
                        tmp[2, j, t] = u[2]
                        tmp[3, j, t] = u[3]
                for r in range(4):
                    tr = tmp[r]
                    rr = rows[r]
                    for t in range(TW):
                        u = at4(tr[0, t], tr[1, t], tr[2, t], tr[3, t], tr[4, t], tr[5, t])
                        rr[4 * t] = u[0]
                        rr[4 * t + 1] = u[1]
                        rr[4 * t + 2] = u[2]
                        rr[4 * t + 3] = u[3]
            for r in range(m):
                p = th * m + r
                if p >= OH:
                    break
                if has_res:
                    store_row_res(y[n, k, p], rows[r, :OW], bk, res[n, k, p], act)
                else:
                    store_row(y[n, k, p], rows[r, :OW], bk, act)
