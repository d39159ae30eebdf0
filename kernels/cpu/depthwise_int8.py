"""int8 depthwise convolution: each channel's plane against its own int8 filter, straight
from the NCHW planes (no channels-last move, no gathered columns).

    acc[n, c, oh, ow] = sum_(r, s) (xpad[n, c, oh*sh + r*dh, ow*sw + s*dw] - zx) * w[c, r*S + s]

xpad the plane padded with the zero point (so the padding's taps add nothing): the integer
reference's acc - zx * sum(w).  Then int8._finish's epilogue, bit for bit: act(float32(acc)
* scale[c] + b[c] (+ res)), stored as float32 or requantized.

The sums run in float32 and are exact: each product is an integer of at most 255 * 128 in
magnitude and every partial sum of at most MAX_TAPS of them stays below 2**24, where float32
holds every integer (the caller sends larger filters to the general kernels); the same
loops on int32 measured no faster.  A task is one (image, channel) plane: it writes x - zx
into a padded float32 plane once, then at stride 1 runs each tap as one loop over the
whole output plane laid out at the padded width (the taps' reads are then one shift
apart: long vector loops; the pl + pr extra columns a row are never stored), at larger
strides row by row into the same layout.

The general int8 kernels had run a depthwise conv as a grouped GEMM of one channel a
group: 11 ms on MobileNetV2's 144@56 (2 threads) against 98 us fp32; this kernel takes
0.23-0.35 ms (row-by-row tap loops on int32 had taken 1.1).  What is left is the
per-plane copy and epilogue and each tap's load and store of the sums: still 3-8x the
fp32 depthwise kernel, which fuse_qdq therefore keeps for QDQ models.
"""
import numpy as np
from numba import njit, prange

MAX_TAPS = (1 << 24) // (255 * 128)   # 514: float32 sums of that many products are exact


@njit(parallel=True, cache=True)
def depthwise_int8(x, w, zx, scale, b, act, res, has_res, y, yq, quant_out, inv_sy, zy, qmin,
                   qmax, sh, sw, dh, dw, pt, pl, OH, OW, R, S):
    """x (N, C, H, W) uint8 or int8; w (C, R*S) int8, R*S <= MAX_TAPS; zx int32; scale, b
    (C,) float32; y or yq (N, C, OH*OW) float32 or int8/uint8 (quant_out); res (N, C, OH*OW)
    float32 when has_res.  act: 0 none, 1 relu, 2 relu6."""
    N, C, H, W = x.shape
    HP = max(H + pt, (OH - 1) * sh + (R - 1) * dh + 1)   # rows the taps read, padded
    WP = max(W + pl, (OW - 1) * sw + (S - 1) * dw + 1)
    flat = sh == 1 and sw == 1
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        plane = x[n, c]
        # x - zx, zero in the padding; (S-1)*dw spare elements for the flat taps' tail
        xs = np.zeros(HP * WP + (S - 1) * dw, np.float32)
        for i in range(H):
            src = plane[i]
            dst = xs[(i + pt) * WP + pl:(i + pt) * WP + pl + W]
            for j in range(W):
                dst[j] = np.float32(np.int32(src[j]) - zx)
        # the sums laid out at the padded width: output row oh at acc[oh*WP : oh*WP + OW]
        acc = np.zeros(OH * WP, np.float32)
        for r in range(R):
            for s in range(S):
                wv = np.float32(w[c, r * S + s])
                off = r * dh * WP + s * dw
                if flat:   # every output row at once: the tap's reads are one shift apart
                    src = xs[off:off + OH * WP]
                    for j in range(acc.size):
                        acc[j] += src[j] * wv
                else:
                    for oh in range(OH):
                        base = oh * sh * WP + off
                        row = acc[oh * WP:oh * WP + OW]
                        for ow in range(OW):
                            row[ow] += xs[base + ow * sw] * wv
        sc, bc = scale[c], b[c]
        for oh in range(OH):
            p0 = oh * OW
            _finish_row(acc[oh * WP:oh * WP + OW], sc, bc, act,
                        res[n, c, p0:p0 + OW] if has_res else res[0, 0, :0], has_res,
                        y[0, 0, :0] if quant_out else y[n, c, p0:p0 + OW],
                        yq[n, c, p0:p0 + OW] if quant_out else yq[0, 0, :0], quant_out,
                        inv_sy, zy, qmin, qmax)


@njit(inline="always")
def _finish_row(a, sc, bc, act, res, has_res, y, yq, quant_out, inv_sy, zy, qmin, qmax):
    """int8._finish over one output row's sums a (exact integers in float32; views of the
    row, so the loop vectorizes)."""
    zero, six = np.float32(0), np.float32(6)
    for ow in range(a.size):
        v = a[ow] * sc + bc
        if has_res:
            v = v + res[ow]
        if act == 1:
            v = max(v, zero)
        elif act == 2:
            v = min(max(v, zero), six)
        if quant_out:
            q = np.rint(v * inv_sy) + zy
            yq[ow] = min(max(q, qmin), qmax)
        else:
            y[ow] = v
