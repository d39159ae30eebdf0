"""Slow, obviously-correct float64 references: the oracle of every test.

Everything here is plain NumPy in float64, written for readability, not
speed.  Inputs are NCHW; weights are (K, C/groups, R, S) as in PyTorch.
"""
import math

import numpy as np

_ACTIVATIONS = {
    None: lambda v: v,
    "relu": lambda v: np.maximum(v, 0.0),
    "relu6": lambda v: np.minimum(np.maximum(v, 0.0), 6.0),
}


def _pair(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def activation(y, name):
    """Apply an epilogue activation by name (None, "relu", "relu6")."""
    return _ACTIVATIONS[name](y)


def pad2d(x, pad_top, pad_bottom, pad_left, pad_right, value=0.0):
    """Pad the last two axes of an NCHW array with a constant."""
    return np.pad(x, ((0, 0), (0, 0), (pad_top, pad_bottom), (pad_left, pad_right)),
                  constant_values=value)


def conv2d(x, w, b=None, stride=1, padding=0, dilation=1, groups=1, activation=None):
    """2-D cross-correlation, PyTorch semantics.

    y[n, k, p, q] = b[k] + sum_{c, r, s} x_pad[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw] * w[k, c, r, s]

    with g = k // (K / groups), Cg = C / groups.  ``padding`` is an int, a pair
    (symmetric) or a 4-tuple (top, bottom, left, right).
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    if np.isscalar(padding):
        pt = pb = pl = pr = int(padding)
    elif len(padding) == 2:
        pt = pb = int(padding[0])
        pl = pr = int(padding[1])
    else:
        pt, pb, pl, pr = (int(p) for p in padding)
    n, c, h, wd = x.shape
    k, cg, r, s = w.shape
    xp = pad2d(x, pt, pb, pl, pr)
    oh = (h + pt + pb - dh * (r - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (s - 1) - 1) // sw + 1
    kg = k // groups
    y = np.zeros((n, k, oh, ow), np.float64)
    for g in range(groups):
        xg = xp[:, g * cg:(g + 1) * cg]
        wg = w[g * kg:(g + 1) * kg]
        for i in range(r):
            for j in range(s):
                patch = xg[:, :, i * dh: i * dh + sh * (oh - 1) + 1: sh,
                           j * dw: j * dw + sw * (ow - 1) + 1: sw]
                y[:, g * kg:(g + 1) * kg] += np.einsum("nchw,kc->nkhw", patch, wg[:, :, i, j])
    if b is not None:
        y += np.asarray(b, np.float64)[None, :, None, None]
    return _ACTIVATIONS[activation](y)


def _pool_out(size, k, s, p, d, ceil_mode):
    span = size + 2 * p - d * (k - 1) - 1
    out = (-(-span // s) if ceil_mode else span // s) + 1
    # PyTorch: the last window must start inside the input or left padding
    if ceil_mode and (out - 1) * s >= size + p:
        out -= 1
    return out


def max_pool2d(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max over each window; padding counts as -inf (PyTorch semantics); NaN propagates."""
    x = np.asarray(x, np.float64)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    n, c, h, w = x.shape
    oh = _pool_out(h, kh, sh, ph, dh, ceil_mode)
    ow = _pool_out(w, kw, sw, pw, dw, ceil_mode)
    y = np.full((n, c, oh, ow), -np.inf)
    for p in range(oh):
        for q in range(ow):
            for i in range(kh):
                for j in range(kw):
                    hi = p * sh - ph + i * dh
                    wi = q * sw - pw + j * dw
                    if 0 <= hi < h and 0 <= wi < w:
                        v = x[:, :, hi, wi]
                        cur = y[:, :, p, q]
                        y[:, :, p, q] = np.where(np.isnan(v) | (v > cur), v, cur)
    return y


def avg_pool2d(x, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True, divisor_override=None):
    """Mean over each window, PyTorch semantics for padding and ceil_mode."""
    x = np.asarray(x, np.float64)
    kh, kw = _pair(kernel_size)
    sh, sw = _pair(stride if stride is not None else kernel_size)
    ph, pw = _pair(padding)
    n, c, h, w = x.shape
    oh = _pool_out(h, kh, sh, ph, 1, ceil_mode)
    ow = _pool_out(w, kw, sw, pw, 1, ceil_mode)
    y = np.zeros((n, c, oh, ow))
    for p in range(oh):
        for q in range(ow):
            h0, w0 = p * sh - ph, q * sw - pw
            h1, w1 = min(h0 + kh, h + ph), min(w0 + kw, w + pw)
            pool_size = (h1 - h0) * (w1 - w0)
            h0c, w0c, h1c, w1c = max(h0, 0), max(w0, 0), min(h1, h), min(w1, w)
            total = x[:, :, h0c:h1c, w0c:w1c].sum(axis=(2, 3))
            if divisor_override:
                div = divisor_override
            elif count_include_pad:
                div = pool_size
            else:
                div = (h1c - h0c) * (w1c - w0c)
            y[:, :, p, q] = total / div
    return y


def adaptive_avg_pool2d(x, output_size):
    """Adaptive average pooling: bin i spans [floor(i*H/OH), ceil((i+1)*H/OH))."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape
    oh, ow = _pair(output_size)
    oh = h if oh is None else oh
    ow = w if ow is None else ow
    y = np.zeros((n, c, oh, ow))
    for p in range(oh):
        h0, h1 = (p * h) // oh, math.ceil((p + 1) * h / oh)
        for q in range(ow):
            w0, w1 = (q * w) // ow, math.ceil((q + 1) * w / ow)
            y[:, :, p, q] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return y


def linear(x, w, b=None):
    """y = x @ w.T + b, with w of shape (out_features, in_features)."""
    y = np.asarray(x, np.float64) @ np.asarray(w, np.float64).T
    if b is not None:
        y = y + np.asarray(b, np.float64)
    return y


def batch_norm(x, mean, var, gamma=None, beta=None, eps=1e-5):
    """Inference batch norm over axis 1: (x - mean) / sqrt(var + eps) * gamma + beta."""
    x = np.asarray(x, np.float64)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    g = np.ones_like(mean) if gamma is None else gamma
    bt = np.zeros_like(mean) if beta is None else beta
    scale = np.asarray(g, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    return (x - np.asarray(mean, np.float64).reshape(shape)) * scale.reshape(shape) \
        + np.asarray(bt, np.float64).reshape(shape)


def conv_transpose2d(x, w, b=None, stride=1, padding=0, output_padding=0, groups=1,
                     dilation=1, activation=None):
    """torch.nn.functional.conv_transpose2d in float64; padding may be (top, bottom, left, right).

    Every input pixel scatters w[c, k] into the full output, which is then cropped:
    yfull[n, g*Kg+k, i*sh + r*dh, j*sw + s*dw] += x[n, g*Cg+c, i, j] * w[g*Cg+c, k, r, s].
    """
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    oph, opw = _pair(output_padding)
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        pt, pb, pl, pr = padding
    else:
        ph, pw = _pair(padding)
        pt, pb, pl, pr = ph, ph, pw, pw
    n, c, h, wd = x.shape
    _, kg, r_, s_ = w.shape
    cg = c // groups
    full_h = (h - 1) * sh + dh * (r_ - 1) + 1 + oph
    full_w = (wd - 1) * sw + dw * (s_ - 1) + 1 + opw
    yfull = np.zeros((n, kg * groups, full_h, full_w))
    for g in range(groups):
        xs = x[:, g * cg:(g + 1) * cg]
        for r in range(r_):
            for s in range(s_):
                contrib = np.einsum("nchw,ck->nkhw", xs, w[g * cg:(g + 1) * cg, :, r, s])
                yfull[:, g * kg:(g + 1) * kg, r * dh:r * dh + (h - 1) * sh + 1:sh,
                      s * dw:s * dw + (wd - 1) * sw + 1:sw] += contrib
    y = yfull[:, :, pt:full_h - pb, pl:full_w - pr]
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return _ACTIVATIONS[activation](y) if activation else y


def int8_gemm(a, b):
    """Exact integer a @ b (int64), for checking int8 GEMMs bit for bit."""
    return np.asarray(a, np.int64) @ np.asarray(b, np.int64)


def int8_conv2d(xq, zx, sx, wq, sw, b=None, stride=1, padding=0, dilation=1, groups=1,
                activation=None, residual=None, out_scale=None, out_zero_point=0,
                out_dtype=np.int8):
    """The integer reference of fastconv's int8 convolution, rounding step by step as the
    kernel does: acc in int64 (exact), then float32(acc - zx*wsum[k]) * float32(sx*sw[k])
    + b[k] (+ residual), activation, and optionally round-half-even requantization with
    saturation to out_dtype."""
    xq = np.asarray(xq)
    wq = np.asarray(wq)
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        pt, pb, pl, pr = padding
    else:
        ph, pw = _pair(padding)
        pt, pb, pl, pr = ph, ph, pw, pw
    xp = np.pad(xq.astype(np.int64), ((0, 0), (0, 0), (pt, pb), (pl, pr)), constant_values=zx)
    acc = conv2d(xp, wq.astype(np.int64), None, stride, 0, dilation, groups)  # exact in float64
    acc = np.rint(acc).astype(np.int64)  # products < 2**53: the float64 sums are exact integers
    k = wq.shape[0]
    wsum = wq.reshape(k, -1).astype(np.int64).sum(axis=1)
    scale = (np.float32(sx) * np.asarray(sw, np.float32)).astype(np.float32)
    bias = np.zeros(k, np.float32) if b is None else np.asarray(b, np.float32)
    v = (acc - zx * wsum.reshape(1, -1, 1, 1)).astype(np.float32) * scale.reshape(1, -1, 1, 1)
    v = (v + bias.reshape(1, -1, 1, 1)).astype(np.float32)
    if residual is not None:
        v = (v + np.asarray(residual, np.float32)).astype(np.float32)
    if activation == "relu":
        v = np.maximum(v, np.float32(0))
    elif activation == "relu6":
        v = np.minimum(np.maximum(v, np.float32(0)), np.float32(6))
    if out_scale is None:
        return v
    info = np.iinfo(out_dtype)
    q = np.rint(v * np.float32(1.0 / out_scale)) + out_zero_point
    return np.clip(q, info.min, info.max).astype(out_dtype)
