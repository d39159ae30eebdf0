"""Few-pixel convolution: each weight row dotted with every receptive field.

For a map of P = N*OH*OW output pixels with P small (a network's later stages on a
small image: 8x8 down to 1x1 maps) the convolution is a product with a handful of
columns, and its cost is streaming the weights more than the multiply-adds.  With the
receptive fields gathered pixel-major,

    f[p, (c, r, s)] = x[n, c, oh*sh + r*dh - pt, ow*sw + s*dw - pl]   (0 outside the input)

for p = (n, oh, ow), every output is one dot product of a weight row in its natural
(K, C*R*S) layout with one of them:

    y[n, k, oh, ow] = act(b[k] + sum_j w[k, j] * f[p, j]  (+ res[n, k, oh, ow]))

Both operands are contiguous along j, so the reduction vectorizes over j (fastmath
reassociation, NaN and Inf still propagate).  Four weight rows are dotted with four
receptive fields at once (16 vector accumulators, 8 loads per 16 multiply-adds), so
each weight row is read from memory once and from L1/L2 once per four pixels.  Tasks
are blocks of output channels (``kblock``, a multiple of 4 but the last).  Below four
pixels the rows go one at a time instead: the block of four rows made four short
streams that the hardware prefetchers picked up afresh every block, and with the
weights coming from memory (a ResNet-50 on a 32x32 image: 100 MB of them) 512->2048
at one pixel read 15.6 GB/s that way and 31-34 GB/s as one sequential stream (at
four pixels a row at a time was twice as slow warm: the 4x4 block stays).  Each
task gathers the P receptive fields into its own slice of ``f`` (P*C*R*S floats:
a few KB to a few hundred), so the call is one parallel region.  No weight
packing: the layer's weight is used as it is.
"""
import numpy as np
from numba import njit, prange

from . import FASTMATH
from .epilogue import activate

ZERO = np.float32(0.0)


@njit(inline="always")
def _gather(f, xf, C, H, W, OH, OW, sh, sw, dh, dw, pt, pl, R, S, taps):
    """f[p, (c*R + r)*S + s] = x[n, c, oh*sh + r*dh - pt, ow*sw + s*dw - pl] or 0, from the
    flat input xf: per pixel the R*S tap offsets within a plane (-1: padding) are found
    once, then every channel copies its taps (no 4-D index arithmetic per element)."""
    RS = R * S
    HW = H * W
    for p in range(f.shape[0]):
        n = p // (OH * OW)
        q = p - n * (OH * OW)
        oh = q // OW
        ow = q - oh * OW
        for r in range(R):
            ih = oh * sh + r * dh - pt
            for s in range(S):
                iw = ow * sw + s * dw - pl
                taps[r * S + s] = ih * W + iw if 0 <= ih < H and 0 <= iw < W else -1
        fp = f[p]
        x0 = n * C * HW
        if RS == 1:
            o = taps[0]
            if o < 0:
                for c in range(C):
                    fp[c] = ZERO
            else:
                for c in range(C):
                    fp[c] = xf[x0 + c * HW + o]
            continue
        for c in range(C):
            xc = x0 + c * HW
            for t in range(RS):
                o = taps[t]
                fp[c * RS + t] = xf[xc + o] if o >= 0 else ZERO


@njit(inline="always")
def _store(yf, rf, has_res, o, v, act):
    """yf[o] = act(v (+ rf[o])): o is pixel p's flat offset plus k*OH*OW."""
    if has_res:
        v += rf[o]
    yf[o] = activate(v, act)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_rowdot(x, w, b, y, f, sh, sw, dh, dw, pt, pl, R, S, act, res, has_res, kblock):
    """y (N, K, OH, OW) = act(conv(x, w) + b (+ res)) as dot products of w's rows (K, C*R*S)
    with the gathered receptive fields; f: (tasks, N*OH*OW, C*R*S) workspace."""
    N, K, OH, OW = y.shape
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(x.size)
    P = N * OH * OW
    HW = OH * OW
    J = w.shape[1]
    yf = y.reshape(y.size)
    rf = res.reshape(res.size)
    ntasks = (K + kblock - 1) // kblock
    base = np.empty(P, np.int64)  # pixel p's offset in y (channel 0), the same for every task
    for p in range(P):
        n = p // HW
        base[p] = n * K * HW + (p - n * HW)
    for t in prange(ntasks):
        ft = f[t]
        taps = np.empty(R * S, np.int64)
        _gather(ft, xf, C, H, W, OH, OW, sh, sw, dh, dw, pt, pl, R, S, taps)
        k0 = t * kblock
        k1 = min(K, k0 + kblock)
        k = k0
        # below four pixels every row goes through the one-row loop at the end: the
        # weights one sequential stream (see the docstring)
        while P >= 4 and k + 4 <= k1:
            w0, w1, w2, w3 = w[k], w[k + 1], w[k + 2], w[k + 3]
            p = 0
            while p + 4 <= P:
                f0, f1, f2, f3 = ft[p], ft[p + 1], ft[p + 2], ft[p + 3]
                a00 = a01 = a02 = a03 = ZERO
                a10 = a11 = a12 = a13 = ZERO
                a20 = a21 = a22 = a23 = ZERO
                a30 = a31 = a32 = a33 = ZERO
                for j in range(J):
                    u0, u1, u2, u3 = w0[j], w1[j], w2[j], w3[j]
                    v0, v1, v2, v3 = f0[j], f1[j], f2[j], f3[j]
                    a00 += u0 * v0
                    a01 += u0 * v1
                    a02 += u0 * v2
                    a03 += u0 * v3
                    a10 += u1 * v0
                    a11 += u1 * v1
                    a12 += u1 * v2
                    a13 += u1 * v3
                    a20 += u2 * v0
                    a21 += u2 * v1
                    a22 += u2 * v2
                    a23 += u2 * v3
                    a30 += u3 * v0
                    a31 += u3 * v1
                    a32 += u3 * v2
                    a33 += u3 * v3
                b0, b1, b2, b3 = b[k], b[k + 1], b[k + 2], b[k + 3]
                _store(yf, rf, has_res, base[p] + k * HW, a00 + b0, act)
                _store(yf, rf, has_res, base[p + 1] + k * HW, a01 + b0, act)
                _store(yf, rf, has_res, base[p + 2] + k * HW, a02 + b0, act)
                _store(yf, rf, has_res, base[p + 3] + k * HW, a03 + b0, act)
                _store(yf, rf, has_res, base[p] + (k + 1) * HW, a10 + b1, act)
                _store(yf, rf, has_res, base[p + 1] + (k + 1) * HW, a11 + b1, act)
                _store(yf, rf, has_res, base[p + 2] + (k + 1) * HW, a12 + b1, act)
                _store(yf, rf, has_res, base[p + 3] + (k + 1) * HW, a13 + b1, act)
                _store(yf, rf, has_res, base[p] + (k + 2) * HW, a20 + b2, act)
                _store(yf, rf, has_res, base[p + 1] + (k + 2) * HW, a21 + b2, act)
                _store(yf, rf, has_res, base[p + 2] + (k + 2) * HW, a22 + b2, act)
                _store(yf, rf, has_res, base[p + 3] + (k + 2) * HW, a23 + b2, act)
                _store(yf, rf, has_res, base[p] + (k + 3) * HW, a30 + b3, act)
                _store(yf, rf, has_res, base[p + 1] + (k + 3) * HW, a31 + b3, act)
                _store(yf, rf, has_res, base[p + 2] + (k + 3) * HW, a32 + b3, act)
                _store(yf, rf, has_res, base[p + 3] + (k + 3) * HW, a33 + b3, act)
                p += 4
            while p < P:  # the last pixels: four rows at a time, one pixel
                fp = ft[p]
                a0 = a1 = a2 = a3 = ZERO
                for j in range(J):
                    v = fp[j]
                    a0 += w0[j] * v
                    a1 += w1[j] * v
                    a2 += w2[j] * v
                    a3 += w3[j] * v
                _store(yf, rf, has_res, base[p] + k * HW, a0 + b[k], act)
                _store(yf, rf, has_res, base[p] + (k + 1) * HW, a1 + b[k + 1], act)
                _store(yf, rf, has_res, base[p] + (k + 2) * HW, a2 + b[k + 2], act)
                _store(yf, rf, has_res, base[p] + (k + 3) * HW, a3 + b[k + 3], act)
                p += 1
            k += 4
        while k < k1:  # the last rows (all of them below four pixels): one at a time
            wk = w[k]
            for p in range(P):
                fp = ft[p]
                a = ZERO
                for j in range(J):
                    a += wk[j] * fp[j]
                _store(yf, rf, has_res, base[p] + k * HW, a + b[k], act)
            k += 1
