"""Pooling on the GPU, one thread per output element (torch semantics, as on the CPU).

max:  max over in-image window positions (padding never wins; NaN propagates)
avg:  sum / divisor: divisor_override, else the window clipped to the padded
      plane (count_include_pad) or the in-image count
adaptive avg: bin i spans [floor(i*H/OH), ceil((i+1)*H/OH))

Launch: grid ceil(N*C*OH*OW / 256), block 256.
"""
import math

from numba import cuda, float32


@cuda.jit
def max_pool2d(x, y, kh, kw, sh, sw, ph, pw, dh, dw):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    t = cuda.grid(1)
    if t >= N * C * OH * OW:
        return
    ow = t % OW
    oh = (t // OW) % OH
    nc = t // (OW * OH)
    n = nc // C
    c = nc - n * C
    m = -math.inf
    nan = False
    for r in range(kh):
        ih = oh * sh - ph + r * dh
        if ih < 0 or ih >= H:
            continue
        for s in range(kw):
            iw = ow * sw - pw + s * dw
            if 0 <= iw < W:
                v = x[n, c, ih, iw]
                if v != v:
                    nan = True
                elif v > m:
                    m = v
    y[n, c, oh, ow] = math.nan if nan else m


@cuda.jit
def avg_pool2d(x, y, kh, kw, sh, sw, ph, pw, include_pad, divisor):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    t = cuda.grid(1)
    if t >= N * C * OH * OW:
        return
    ow = t % OW
    oh = (t // OW) % OH
    nc = t // (OW * OH)
    n = nc // C
    c = nc - n * C
    h0 = oh * sh - ph
    w0 = ow * sw - pw
    h1 = min(h0 + kh, H + ph)
    w1 = min(w0 + kw, W + pw)
    padded = (h1 - h0) * (w1 - w0)
    acc = float32(0)
    cnt = 0
    for ih in range(max(h0, 0), min(h1, H)):
        for iw in range(max(w0, 0), min(w1, W)):
            acc += x[n, c, ih, iw]
            cnt += 1
    d = divisor if divisor > 0 else (padded if include_pad else cnt)
    y[n, c, oh, ow] = acc / float32(d)


@cuda.jit
def adaptive_avg_pool2d(x, y):
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    t = cuda.grid(1)
    if t >= N * C * OH * OW:
        return
    ow = t % OW
    oh = (t // OW) % OH
    nc = t // (OW * OH)
    n = nc // C
    c = nc - n * C
    h0 = (oh * H) // OH
    h1 = -((-(oh + 1) * H) // OH)
    w0 = (ow * W) // OW
    w1 = -((-(ow + 1) * W) // OW)
    acc = float32(0)
    for ih in range(h0, h1):
        for iw in range(w0, w1):
            acc += x[n, c, ih, iw]
    y[n, c, oh, ow] = acc / float32((h1 - h0) * (w1 - w0))
