"""Sparse CSR convolution on the GPU (pruned weights), as on the CPU:

    y[n, k, p] = act(b[k] + sum_(i in row k) vals[i] * x[n, chan_i, oh*sh - pt + roff_i, ow*sw - pl + coff_i] (+ res))

with roff = r*dh, coff = s*dw.  One thread per output element; a block's
threads share one output channel's row of the CSR matrix (the row's nonzeros
are warp-uniform, so their loads broadcast) and take consecutive pixels, so
input reads coalesce.  Launch: grid (ceil(OH*OW / 256), N*K), block 256.
"""
from numba import cuda, float32

from .epilogue import activate


@cuda.jit
def sparse_conv2d(x, indptr, chan, roff, coff, vals, b, y, res, has_res, act, sh, sw, pt, pl):
    N, C, H, W = x.shape
    K, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    p = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    nk = cuda.blockIdx.y
    n = nk // K
    k = nk - n * K
    if p >= OH * OW:
        return
    oh = p // OW
    ow = p - oh * OW
    acc = float32(0)
    for i in range(indptr[k], indptr[k + 1]):
        ih = oh * sh - pt + roff[i]
        iw = ow * sw - pl + coff[i]
        if 0 <= ih < H and 0 <= iw < W:
            acc += vals[i] * x[n, chan[i], ih, iw]
    v = acc + b[k]
    if has_res:
        v += res[n, k, oh, ow]
    y[n, k, oh, ow] = activate(v, act)
