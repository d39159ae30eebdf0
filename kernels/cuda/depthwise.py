"""Depthwise convolution on the GPU (groups == C, channel multiplier M = K / C).

    y[n, k, oh, ow] = act(b[k] + sum_(r,s) w[k, r, s] * x[n, k // M, oh*sh - pt + r*dh, ow*sw - pl + s*dw])

A block is a 16 x 16 tile of output pixels of one (n, k) plane; it stages the
input tile with its halo ((16-1)*stride + (R-1)*dilation + 1 rows and columns)
in shared memory, zero outside the image, then each thread computes one
output from shared memory.  Tiles larger than the shared buffer (very large
kernels or strides) read global memory directly.

Launch: grid (ceil(OW / 16), ceil(OH / 16), N * K), block (16, 16).
"""
from numba import cuda, float32

from .epilogue import activate

TILE = 16
HALO = 48  # shared tile side: covers stride 2 with kernels up to 17, stride 1 up to 33


@cuda.jit
def depthwise_conv2d(x, w, b, y, res, has_res, act, sh, sw, pt, pl, dh, dw):
    """x (N, C, H, W); w (K, R, S); y/res (N, K, OH, OW)."""
    sx = cuda.shared.array((HALO, HALO), float32)
    N, C, H, W = x.shape
    K, R, S = w.shape
    OH, OW = y.shape[2], y.shape[3]
    M = K // C
    nk = cuda.blockIdx.z
    n = nk // K
    k = nk - n * K
    c = k // M
    oh0 = cuda.blockIdx.y * TILE
    ow0 = cuda.blockIdx.x * TILE
    ty = cuda.threadIdx.y
    tx = cuda.threadIdx.x
    th = (TILE - 1) * sh + (R - 1) * dh + 1
    tw = (TILE - 1) * sw + (S - 1) * dw + 1
    ih0 = oh0 * sh - pt
    iw0 = ow0 * sw - pl
    staged = th <= HALO and tw <= HALO
    if staged:
        for i in range(ty, th, TILE):
            for j in range(tx, tw, TILE):
                ih = ih0 + i
                iw = iw0 + j
                sx[i, j] = x[n, c, ih, iw] if (0 <= ih < H and 0 <= iw < W) else float32(0)
    cuda.syncthreads()
    oh = oh0 + ty
    ow = ow0 + tx
    if oh < OH and ow < OW:
        acc = float32(0)
        for r in range(R):
            for s in range(S):
                if staged:
                    v = sx[ty * sh + r * dh, tx * sw + s * dw]
                else:
                    ih = oh * sh - pt + r * dh
                    iw = ow * sw - pl + s * dw
                    v = x[n, c, ih, iw] if (0 <= ih < H and 0 <= iw < W) else float32(0)
                acc += w[k, r, s] * v
        v = acc + b[k]
        if has_res:
            v += res[n, k, oh, ow]
        y[n, k, oh, ow] = activate(v, act)
