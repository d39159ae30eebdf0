"""Implicit-GEMM convolution on the GPU: im2col never materialized in global memory.

For image n and group g the product is y[k, p] = sum_q w[k, q] * cols[q, p] with
q = (c, r, s) and cols[q, p] = x[n, g*Cg + c, oh*sh - pt + r*dh, ow*sw - pl + s*dw]
(zero outside the image).  A block computes a TM x TN tile (output channels x
output pixels) with 16 x 16 threads, each owning a 4 x 4 register tile (rows
ty + 16*i, columns tx + 16*j, so shared-memory reads are conflict free).  The
reduction runs in chunks of TK: the block stages the weight chunk (TM x TK) and
the gathered column chunk (TK x TN) in shared memory, coalesced along the
fastest-varying global index, synchronizes, and accumulates.  The epilogue adds
bias and the residual and applies the activation before the single store.

Launch: grid (ceil(P / TN), ceil(Kg / TM), N * groups), block (16, 16).

Two tilings (``make_kernel``): 64 x 64 (4 x 4 per thread) for the usual layers,
and 32 x 32 (2 x 2 per thread) for layers with few output channels per group
or few pixels, where a 64-wide tile would leave most of the block idle
(fastconv/_cuda.py chooses by Kg and P).
"""
from numba import cuda, float32

from .epilogue import activate

TM = 64
TN = 64
TK = 16


def make_kernel(TM, TN, TK, PT):
    """The implicit-GEMM kernel for a TM x TN tile, reduction chunks of TK, PT x PT outputs
    per thread (16 x 16 threads: TM = TN = 16 * PT)."""
    THREADS = 256

    @cuda.jit
    def conv2d_implicit_gemm(x, w, b, y, res, has_res, act, R, S, sh, sw, pt, pl, dh, dw, groups,
                             OW):
        """x (N, C, H, W); w (K, Cg*R*S); b (K,); y/res (N, K, OH*OW)."""
        sA = cuda.shared.array((TK, TM), float32)
        sB = cuda.shared.array((TK, TN), float32)
        acc = cuda.local.array((PT, PT), float32)
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * 16 + tx
        N, C, H, W = x.shape
        K, CRS = w.shape
        P = y.shape[2]
        Kg = K // groups
        Cg = C // groups
        RS = R * S
        p0 = cuda.blockIdx.x * TN
        k0 = cuda.blockIdx.y * TM
        n = cuda.blockIdx.z // groups
        g = cuda.blockIdx.z % groups
        for i in range(PT):
            for j in range(PT):
                acc[i, j] = float32(0)
        for q0 in range(0, CRS, TK):
            for e in range(tid, TK * TM, THREADS):
                m = e // TK
                kq = e - m * TK
                k = k0 + m
                q = q0 + kq
                sA[kq, m] = w[g * Kg + k, q] if (k < Kg and q < CRS) else float32(0)
            for e in range(tid, TK * TN, THREADS):
                kq = e // TN
                jj = e - kq * TN
                p = p0 + jj
                q = q0 + kq
                v = float32(0)
                if p < P and q < CRS:
                    c = q // RS
                    rs = q - c * RS
                    r = rs // S
                    s = rs - r * S
                    oh = p // OW
                    ow = p - oh * OW
                    ih = oh * sh - pt + r * dh
                    iw = ow * sw - pl + s * dw
                    if 0 <= ih < H and 0 <= iw < W:
                        v = x[n, g * Cg + c, ih, iw]
                sB[kq, jj] = v
            cuda.syncthreads()
            for kq in range(TK):
                for i in range(PT):
                    av = sA[kq, ty + 16 * i]
                    for j in range(PT):
                        acc[i, j] += av * sB[kq, tx + 16 * j]
            cuda.syncthreads()
        for i in range(PT):
            k = k0 + ty + 16 * i
            if k < Kg:
                kk = g * Kg + k
                for j in range(PT):
                    p = p0 + tx + 16 * j
                    if p < P:
                        v = acc[i, j] + b[kk]
                        if has_res:
                            v += res[n, kk, p]
                        y[n, kk, p] = activate(v, act)

    return conv2d_implicit_gemm


conv2d_implicit_gemm = make_kernel(64, 64, 16, 4)
conv2d_implicit_gemm_small = make_kernel(32, 32, 16, 2)
SMALL = 32


@cuda.jit
def transpose2d(a, out):
    """out[j, i] = a[i, j] through a 32 x 32 shared tile (coalesced both ways)."""
    tile = cuda.shared.array((32, 33), float32)
    bx = cuda.blockIdx.x * 32
    by = cuda.blockIdx.y * 32
    tx = cuda.threadIdx.x
    ty = cuda.threadIdx.y
    M, Nn = a.shape
    for k in range(0, 32, 8):
        i = by + ty + k
        j = bx + tx
        if i < M and j < Nn:
            tile[ty + k, tx] = a[i, j]
    cuda.syncthreads()
    for k in range(0, 32, 8):
        i = bx + ty + k
        j = by + tx
        if i < Nn and j < M:
            out[i, j] = tile[tx, ty + k]
