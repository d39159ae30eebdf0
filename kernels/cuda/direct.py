"""Direct convolution on the GPU: one thread per output element.

    y[n, k, oh, ow] = act(b[k] + sum_(c,r,s) w[k, c, r, s] * x[n, g*Cg + c, oh*sh - pt + r*dh, ow*sw - pl + s*dw] (+ res))

Threads of a warp take consecutive ow of one output row, so input reads are
coalesced for stride 1 and the weights are warp-uniform (broadcast).  The
simplest family: no shared memory, for small or oddly shaped layers and as the
reference point for the tiled ones.  Launch: grid ceil(N*K*OH*OW / 256), block 256.
"""
from numba import cuda, float32

from .epilogue import activate


@cuda.jit
def direct_conv2d(x, w, b, y, res, has_res, act, sh, sw, pt, pl, dh, dw, groups):
    """x (N, C, H, W); w (K, Cg, R, S); y/res (N, K, OH, OW)."""
    N, C, H, W = x.shape
    K, Cg, R, S = w.shape
    OH, OW = y.shape[2], y.shape[3]
    t = cuda.grid(1)
    if t >= N * K * OH * OW:
        return
    ow = t % OW
    oh = (t // OW) % OH
    k = (t // (OW * OH)) % K
    n = t // (OW * OH * K)
    g = k // (K // groups)
    acc = float32(0)
    for c in range(Cg):
        for r in range(R):
            ih = oh * sh - pt + r * dh
            if ih < 0 or ih >= H:
                continue
            for s in range(S):
                iw = ow * sw - pl + s * dw
                if 0 <= iw < W:
                    acc += w[k, c, r, s] * x[n, g * Cg + c, ih, iw]
    v = acc + b[k]
    if has_res:
        v += res[n, k, oh, ow]
    y[n, k, oh, ow] = activate(v, act)
