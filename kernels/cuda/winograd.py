"""Winograd F(m x m, 3 x 3) on the GPU (Lavin & Gray 2016), the CPU family's three phases.

    V[xi, c, t] = (B^T d_ct B)[xi]            input transform: one thread per (n, c, tile)
    M[xi, k, t] = sum_c U[xi, k, c] V[xi, c, t]  a*a*groups batched GEMMs (64 x 64 x 16 tiles)
    y tile      = A^T M[:, k, t] A            output transform + epilogue: one thread per (n, k, tile)

U (the filter transform) is computed once per weight on the host, in float64,
by the CPU family and copied to the device.  B^T (a x a) and A^T (m x a) are
passed as small arrays, so one kernel serves F(2x2) and F(4x4).  Tiles t run
over the batch, so the GEMMs batch across images.
"""
from numba import cuda, float32

from .epilogue import activate

TM = 64
TN = 64
TK = 16
AMAX = 6  # a = m + 2 for m <= 4


@cuda.jit
def input_transform(x, BT, V, pt, pl, m, TH, TW):
    """x (N, C, H, W); BT (a, a); V (a*a, C, N*TH*TW)."""
    N, C, H, W = x.shape
    a = BT.shape[0]
    t = cuda.grid(1)
    tiles = TH * TW
    if t >= N * C * tiles:
        return
    tile = t % tiles
    c = (t // tiles) % C
    n = t // (tiles * C)
    th = tile // TW
    tw = tile - th * TW
    d = cuda.local.array((AMAX, AMAX), float32)
    tmp = cuda.local.array((AMAX, AMAX), float32)
    for i in range(a):
        ih = th * m - pt + i
        for j in range(a):
            iw = tw * m - pl + j
            d[i, j] = x[n, c, ih, iw] if (0 <= ih < H and 0 <= iw < W) else float32(0)
    for i in range(a):  # tmp = B^T d
        for j in range(a):
            s = float32(0)
            for q in range(a):
                s += BT[i, q] * d[q, j]
            tmp[i, j] = s
    col = n * tiles + tile
    for i in range(a):  # V = tmp B
        for j in range(a):
            s = float32(0)
            for q in range(a):
                s += tmp[i, q] * BT[j, q]
            V[i * a + j, c, col] = s


@cuda.jit
def batched_gemm(U, V, M, groups):
    """M[xi, g*Kg + k, t] = sum_c U[xi, g*Kg + k, c] V[xi, g*Cg + c, t];
    grid (ceil(T/64), ceil(Kg/64), a*a*groups), block (16, 16)."""
    sA = cuda.shared.array((TK, TM), float32)
    sB = cuda.shared.array((TK, TN), float32)
    acc = cuda.local.array((4, 4), float32)
    XI, K, Cg = U.shape
    T = V.shape[2]
    Kg = K // groups
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    tid = ty * 16 + tx
    xi = cuda.blockIdx.z // groups
    g = cuda.blockIdx.z % groups
    t0 = cuda.blockIdx.x * TN
    k0 = cuda.blockIdx.y * TM
    for i in range(4):
        for j in range(4):
            acc[i, j] = float32(0)
    for c0 in range(0, Cg, TK):
        for e in range(tid, TK * TM, 256):
            mm = e // TK
            kq = e - mm * TK
            k = k0 + mm
            c = c0 + kq
            sA[kq, mm] = U[xi, g * Kg + k, c] if (k < Kg and c < Cg) else float32(0)
        for e in range(tid, TK * TN, 256):
            kq = e // TN
            jj = e - kq * TN
            c = c0 + kq
            tt = t0 + jj
            sB[kq, jj] = V[xi, g * Cg + c, tt] if (c < Cg and tt < T) else float32(0)
        cuda.syncthreads()
        for kq in range(TK):
            for i in range(4):
                av = sA[kq, ty + 16 * i]
                for j in range(4):
                    acc[i, j] += av * sB[kq, tx + 16 * j]
        cuda.syncthreads()
    for i in range(4):
        k = k0 + ty + 16 * i
        if k < Kg:
            for j in range(4):
                tt = t0 + tx + 16 * j
                if tt < T:
                    M[xi, g * Kg + k, tt] = acc[i, j]


@cuda.jit
def output_transform(M, AT, b, y, res, has_res, act, TH, TW):
    """M (a*a, K, N*TH*TW); AT (m, a); y/res (N, K, OH, OW)."""
    N, K, OH, OW = y.shape
    m, a = AT.shape
    tiles = TH * TW
    t = cuda.grid(1)
    if t >= N * K * tiles:
        return
    tile = t % tiles
    k = (t // tiles) % K
    n = t // (tiles * K)
    th = tile // TW
    tw = tile - th * TW
    col = n * tiles + tile
    tmp = cuda.local.array((4, AMAX), float32)
    for i in range(m):  # tmp = A^T M
        for j in range(a):
            s = float32(0)
            for q in range(a):
                s += AT[i, q] * M[q * a + j, k, col]
            tmp[i, j] = s
    for i in range(m):  # y = tmp A
        oh = th * m + i
        if oh >= OH:
            continue
        for j in range(m):
            ow = tw * m + j
            if ow < OW:
                s = float32(0)
                for q in range(a):
                    s += tmp[i, q] * AT[j, q]
                v = s + b[k]
                if has_res:
                    v += res[n, k, oh, ow]
                y[n, k, oh, ow] = activate(v, act)
