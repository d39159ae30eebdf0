"""Depthwise convolution: groups == C, one filter (or ``mult`` filters) per input channel.

    y[n, c*mult + m, p, q] = act(b[k] + sum_{r, s} xp[n, c, p*sh + r*dh, q*sw + s*dw] * w[k, 0, r, s] (+ res[n, k, p, q]))

with k = c*mult + m and xp the zero-padded input.  Every input element feeds
only R*S*mult multiply-adds, so the kernel is memory-bound by design: each task
takes one (n, c) plane, copies it once into the interior of its thread's
zero-padded plane buffer (L1/L2-resident; zeroed once per call, so only the
interior is copied per plane; this removes every bounds check and the separate
padding pass), and produces the ``mult`` output planes from it.

Stride 1 works on the flattened padded plane: output (p, q) reads flat index
p*WP + q + r*dh*WP + s*dw, so one loop over L = (OH-1)*WP + OW flat positions
computes every output row at once (the WP - OW positions between rows are
computed and thrown away) -- long unit-stride vectors even for 7x7 planes.
A 3x3 filter runs all nine taps in that one loop with the weights in
registers; other sizes add one tap per pass over the L1-resident buffer.
Stride > 1 runs row by row, taps fused for 3x3; for 3x3 stride 2 (MobileNet's
downsampling layers) each input row is copied straight into the even and odd
columns of its padded row, so that the nine taps read three unit-stride
vectors per input row.  The epilogue (bias, residual,
activation) is a separate, vectorized pass per output row.
"""
import numba
import numpy as np
from numba import njit, prange

from . import FASTMATH, nchwc
from .epilogue import apply_row, apply_row_res, store_row, store_row_res


@njit(inline="always")
def _taps3x3(w, k):
    """The nine weights of 3x3 filter k, to keep in registers."""
    f = w[k, 0]
    return f[0, 0], f[0, 1], f[0, 2], f[1, 0], f[1, 1], f[1, 2], f[2, 0], f[2, 1], f[2, 2]


@njit(inline="always")
def _plane_epilogue(y, n, k, buf, bk, act, res, has_res):
    """y[n, k] = act(buf[:OH*OW] + bk (+ res[n, k])): one call for the whole output plane."""
    OH, OW = y.shape[2], y.shape[3]
    out = y[n, k].reshape(OH * OW)
    if has_res:
        store_row_res(out, buf[:OH * OW], bk, res[n, k].reshape(OH * OW), act)
    else:
        store_row(out, buf[:OH * OW], bk, act)


@njit(inline="always")
def load_plane(src, flat, de, H, W, WP, pad_top, pad_left, split, zx):
    """float32(src) - zx (src an (H, W) plane) into the interior of the padded plane flat
    (rows of width WP), or, ``split`` (3x3 stride 2), each padded row as its even columns
    then its odd ones in de (WE = (WP+1)//2 then WP//2 of them).  The borders are never
    written: the caller keeps them zero.  zx: 0 for a float plane, the zero point for an
    integer one (whose padding is then the zero the float conv pads with)."""
    WE = (WP + 1) // 2
    WO = WP // 2
    # slices indexed by the bare loop variable let Numba drop its wraparound check and
    # LLVM vectorize the copies
    for i in range(H):
        srow = src[i]
        if split:
            r = (i + pad_top) * WP
            ev = de[r:r + WE]
            od = de[r + WE:r + WE + WO]
            if pad_left % 2 == 0:
                first = ev[pad_left // 2:]
                second = od[pad_left // 2:]
            else:
                first = od[(pad_left - 1) // 2:]
                second = ev[(pad_left + 1) // 2:]
            for u in range((W + 1) // 2):
                first[u] = np.float32(srow[2 * u]) - zx
            for u in range(W // 2):
                second[u] = np.float32(srow[2 * u + 1]) - zx
        else:
            inner = flat[(i + pad_top) * WP + pad_left:(i + pad_top) * WP + pad_left + W]
            for j in range(W):
                inner[j] = np.float32(srow[j]) - zx


@njit(inline="always")
def plane_sums(flat, de, w, k, buf, R, S, sh, sw, dh, dw, WP, OH, OW, split):
    """sum_(r, s) xp[p*sh + r*dh, q*sw + s*dw] * w[k, 0, r, s] for every output (p, q) of
    filter k into buf, from the plane load_plane wrote: at stride 1 laid out at the padded
    width (output row p at buf[p*WP : p*WP + OW], the flat loop's columns between rows
    computed and thrown away), else at buf[p*OW : (p+1)*OW]."""
    L = (OH - 1) * WP + OW
    if sh == 1 and sw == 1:
        o = buf[:L]
        if R == 3 and S == 3:
            r1 = dh * WP
            r2 = 2 * dh * WP
            d2 = 2 * dw
            a0 = flat[0:L]
            a1 = flat[dw:dw + L]
            a2 = flat[d2:d2 + L]
            b0 = flat[r1:r1 + L]
            b1 = flat[r1 + dw:r1 + dw + L]
            b2 = flat[r1 + d2:r1 + d2 + L]
            c0 = flat[r2:r2 + L]
            c1 = flat[r2 + dw:r2 + dw + L]
            c2 = flat[r2 + d2:r2 + d2 + L]
            w00, w01, w02, w10, w11, w12, w20, w21, w22 = _taps3x3(w, k)
            for q in range(L):
                o[q] = (w00 * a0[q] + w01 * a1[q] + w02 * a2[q]
                        + w10 * b0[q] + w11 * b1[q] + w12 * b2[q]
                        + w20 * c0[q] + w21 * c1[q] + w22 * c2[q])
        else:
            for q in range(L):
                o[q] = 0.0
            for r in range(R):
                for s in range(S):
                    off = r * dh * WP + s * dw
                    xs = flat[off:off + L]
                    wv = w[k, 0, r, s]
                    for q in range(L):
                        o[q] += wv * xs[q]
    elif split:
        WE = (WP + 1) // 2
        w00, w01, w02, w10, w11, w12, w20, w21, w22 = _taps3x3(w, k)
        for p in range(OH):
            o = buf[p * OW:(p + 1) * OW]
            r0 = p * sh * WP
            r1 = r0 + dh * WP
            r2 = r0 + 2 * dh * WP
            e0 = de[r0:r0 + OW]
            f0 = de[r0 + WE:r0 + WE + OW]
            g0 = de[r0 + 1:r0 + 1 + OW]
            e1 = de[r1:r1 + OW]
            f1 = de[r1 + WE:r1 + WE + OW]
            g1 = de[r1 + 1:r1 + 1 + OW]
            e2 = de[r2:r2 + OW]
            f2 = de[r2 + WE:r2 + WE + OW]
            g2 = de[r2 + 1:r2 + 1 + OW]
            for q in range(OW):
                o[q] = (w00 * e0[q] + w01 * f0[q] + w02 * g0[q]
                        + w10 * e1[q] + w11 * f1[q] + w12 * g1[q]
                        + w20 * e2[q] + w21 * f2[q] + w22 * g2[q])
    else:
        for p in range(OH):
            o = buf[p * OW:(p + 1) * OW]
            base = p * sh * WP
            if R == 3 and S == 3:
                x0 = flat[base:base + WP]
                x1 = flat[base + dh * WP:base + (dh + 1) * WP]
                x2 = flat[base + 2 * dh * WP:base + (2 * dh + 1) * WP]
                w00, w01, w02, w10, w11, w12, w20, w21, w22 = _taps3x3(w, k)
                d2 = 2 * dw
                a0 = x0[0:]
                a1 = x0[dw:]
                a2 = x0[d2:]
                b0 = x1[0:]
                b1 = x1[dw:]
                b2 = x1[d2:]
                c0 = x2[0:]
                c1 = x2[dw:]
                c2 = x2[d2:]
                if sw == 2:
                    for q in range(OW):
                        o[q] = (w00 * a0[2 * q] + w01 * a1[2 * q] + w02 * a2[2 * q]
                                + w10 * b0[2 * q] + w11 * b1[2 * q] + w12 * b2[2 * q]
                                + w20 * c0[2 * q] + w21 * c1[2 * q] + w22 * c2[2 * q])
                else:
                    for q in range(OW):
                        j = q * sw
                        o[q] = (w00 * a0[j] + w01 * a1[j] + w02 * a2[j]
                                + w10 * b0[j] + w11 * b1[j] + w12 * b2[j]
                                + w20 * c0[j] + w21 * c1[j] + w22 * c2[j])
            else:
                for q in range(OW):
                    o[q] = 0.0
                for r in range(R):
                    xrow = flat[base + r * dh * WP:base + (r * dh + 1) * WP]
                    for s in range(S):
                        wv = w[k, 0, r, s]
                        xs = xrow[s * dw:]
                        for q in range(OW):
                            o[q] += wv * xs[q * sw]


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def depthwise_conv2d(x, w, b, y, sh, sw, pad_top, pad_left, HP, WP, dh, dw, act, res, has_res,
                     plane_ws, out_ws, deint_ws):
    """Depthwise conv of x (N, C, H, W) with w (C*mult, 1, R, S) into y (N, C*mult, OH, OW).

    HP, WP: padded plane size; plane_ws, deint_ws: (threads, >= HP*WP) float32, both
    zeroed by the caller (their borders are never written);
    out_ws: (threads, >= OH*WP) float32; res: (N, C*mult, OH, OW), added when has_res.
    Strided paths gather a whole output plane in out_ws, then run one epilogue on it.
    """
    N, C, H, W = x.shape
    K, _, R, S = w.shape
    mult = K // C
    OH, OW = y.shape[2], y.shape[3]
    L = (OH - 1) * WP + OW
    # 3x3 stride 2 reads each padded row as its even and odd columns, so that the taps
    # (s = 0, 1, 2) read even[q], odd[q], even[q + 1] with unit stride
    split = sw == 2 and dw == 1 and R == 3 and S == 3
    for t in prange(N * C):
        n = t // C
        c = t % C
        tid = numba.get_thread_id()
        flat = plane_ws[tid, :HP * WP]
        buf = out_ws[tid]
        de = deint_ws[tid]
        load_plane(x[n, c], flat, de, H, W, WP, pad_top, pad_left, split, np.float32(0))
        for m in range(mult):
            k = c * mult + m
            plane_sums(flat, de, w, k, buf, R, S, sh, sw, dh, dw, WP, OH, OW, split)
            if sh == 1 and sw == 1:
                o = buf[:L]
                if has_res:
                    for p in range(OH):
                        store_row_res(y[n, k, p], buf[p * WP:p * WP + OW], b[k], res[n, k, p], act)
                elif OW >= 32:
                    for p in range(OH):
                        store_row(y[n, k, p], buf[p * WP:p * WP + OW], b[k], act)
                else:
                    # short rows: one epilogue pass over the whole flat buffer (the columns
                    # between rows are discarded anyway), then plain row copies -- one call
                    # per plane instead of one per row (measured: 7x7 maps 20 % faster,
                    # 56x56 maps 20 % slower, hence the split)
                    apply_row(o, b[k], act)
                    for p in range(OH):
                        dst = y[n, k, p]
                        srow = buf[p * WP:p * WP + OW]
                        for q in range(OW):
                            dst[q] = srow[q]
            else:
                _plane_epilogue(y, n, k, buf, b[k], act, res, has_res)


@njit(cache=True)
def pack_blocked(w, out):
    """out[blk, t, c] = w[16*blk + c, 0, t // S, t % S], zero beyond the last channel:
    each tap of a 16-channel block is one vector (nchwc.py)."""
    K, _, R, S = w.shape
    for blk in range(out.shape[0]):
        for t in range(R * S):
            for c in range(nchwc.B):
                k = blk * nchwc.B + c
                out[blk, t, c] = w[k, 0, t // S, t % S] if k < K else 0.0


@njit(inline="always")
def blocked_row(P, p_off, rs, sw, dw, R, OW, wb, bv, act, ob, o_off):
    """One output row of a block: the shared-column kernels for dilation 1, stride 1 (3x3,
    5x5, 7x7) or 2 (3x3, 5x5); one pixel a step otherwise."""
    V = nchwc.B
    if dw == 1 and OW >= nchwc.QB and sw == 1 and (R != 7 or OW >= nchwc.Q7X7):
        if R == 3 and nchwc.ROW7 and OW % 7 == 0 and OW % nchwc.QB != 0:
            nchwc.depthwise_row3x3_s1_q7(P, p_off, rs, V, V, OW, wb, 0, bv, 0, act, ob, o_off)
        elif R == 3:
            nchwc.depthwise_row3x3_s1(P, p_off, rs, V, V, OW, wb, 0, bv, 0, act, ob, o_off)
        elif R == 5:
            nchwc.depthwise_row5x5_s1(P, p_off, rs, V, V, OW, wb, 0, bv, 0, act, ob, o_off)
        else:
            nchwc.depthwise_row7x7_s1(P, p_off, rs, V, V, OW, wb, 0, bv, 0, act, ob, o_off)
    elif dw == 1 and OW >= nchwc.QB and sw == 2 and R != 7:
        if R == 3:
            nchwc.depthwise_row3x3_s2(P, p_off, rs, V, 2 * V, OW, wb, 0, bv, 0, act, ob, o_off)
        else:
            nchwc.depthwise_row5x5_s2(P, p_off, rs, V, 2 * V, OW, wb, 0, bv, 0, act, ob, o_off)
    elif R == 3:
        nchwc.depthwise_row3x3(P, p_off, rs, dw * V, sw * V, OW, wb, 0, bv, 0, act, ob, o_off)
    elif R == 5:
        nchwc.depthwise_row5x5(P, p_off, rs, dw * V, sw * V, OW, wb, 0, bv, 0, act, ob, o_off)
    else:
        nchwc.depthwise_row7x7(P, p_off, rs, dw * V, sw * V, OW, wb, 0, bv, 0, act, ob, o_off)


@njit(inline="always")
def zero_plane_borders(plane_ws, H, W, HP, WP, pad_top, pad_left):
    """The zero border of every thread's padded plane of pixel vectors (HP x WP, the
    H x W interior at (pad_top, pad_left)), written once per call."""
    V = nchwc.B
    for tid in range(plane_ws.shape[0]):
        P = plane_ws[tid]
        for r in range(HP):
            if r < pad_top or r >= pad_top + H:
                seg = P[r * WP * V:(r + 1) * WP * V]
            else:
                seg = P[r * WP * V:(r * WP + pad_left) * V]
                for j in range(seg.shape[0]):
                    seg[j] = 0.0
                seg = P[(r * WP + pad_left + W) * V:(r + 1) * WP * V]
            for j in range(seg.shape[0]):
                seg[j] = 0.0


@njit(inline="always")
def plane_rows_in(xf, base, HW, W, cn, P, offs, done, need, blocked_in):
    """Input rows done .. need - 1 of the cn-channel block whose first plane starts at
    xf[base] into the padded plane P (offs: each pixel's vector offset there), 16 pixels
    a transpose: the last group starts at max(0, need*W - 16), so it may rewrite pixels
    before done or reach past need (all 16 exist: H*W >= 16), with the same values;
    blocked_in: xf holds the block's pixel vectors at base, copied as they are."""
    V = nchwc.B
    hi = need * W
    if blocked_in:
        for f in range(done * W, hi):
            nchwc.copy_vector(xf, base + f * V, P, offs[f])
    else:
        for f0 in range(done * W, hi, V):
            f = max(0, min(f0, hi - V))
            nchwc.to_blocked(xf, base + f, HW, cn, P, offs, f)


@njit(inline="always")
def plane_rows_out(ob, yf, ybase, OHW, OW, cn, p0, p1, res, n, c0, act, has_res):
    """Output rows p0 .. p1 - 1 from the pixel vectors in ob back to the cn channel planes
    from yf[ybase]; with has_res, then y = act(y + res[n, c0 + c]).  A short band's
    16-pixel group reaches back into the rows before: rewritten with the same values
    (and given their residual again, from the unchanged vectors)."""
    V = nchwc.B
    hi = p1 * OW
    lo = max(0, min(p0 * OW, hi - V))
    for f0 in range(lo, hi, V):
        f = max(0, min(f0, hi - V))
        nchwc.from_blocked(ob, f * V, yf, ybase + f, OHW, cn)
    if has_res:
        for c in range(cn):
            o = ybase + c * OHW
            apply_row_res(yf[o + lo:o + hi], 0.0, res[n, c0 + c].reshape(OHW)[lo:hi], act)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def depthwise_conv2d_blocked(x, wt, b, y, R, sh, sw, pad_top, pad_left, HP, WP, dh, dw, act,
                             res, has_res, offs, plane_ws, out_ws, bias_ws, band, blocked_in,
                             blocked_out):
    """Depthwise conv (multiplier 1, R x R filter, R = 3, 5 or 7) of x (N, C, H, W) into
    y (N, C, OH, OW) through 16-channel blocks; wt (ceil(C/16), R*R, 16) from pack_blocked.

    A task is one (n, 16-channel block): the block's planes are transposed into the
    thread's padded plane of pixel vectors (plane_ws, >= HP*WP*16; offs[f] = the
    vector offset of input pixel f; the zero border is written once per call, before
    the tasks, and never overwritten), every output row is one ``depthwise_row`` call
    (R*R vector FMAs a pixel for 16 channels, bias and activation fused) into
    out_ws (>= OH*OW*16), and the result is transposed back into y.  Pixels go 16 at
    a time; the last group of a plane starts at HW - 16 and rewrites a few pixels
    with the same values (needs H*W >= 16 and OH*OW >= 16).  With a residual the
    activation runs after the add, on the output rows.  bias_ws: (threads, >= 16).

    The output rows go in bands of ``band`` rows: each band transposes in only the
    input rows it newly needs, computes its rows and transposes them out (with the
    residual), so a large plane's rows are reused from L2 instead of memory.  A
    band's last pixel group may reach back into the previous band; those pixels are
    rewritten from out_ws and get their residual again.

    blocked_in: x already holds the input channel-blocked, (N, C/16, H*W, 16) viewed as
    (N, C, H, W) (C a multiple of 16; as pointwise_conv2d_to_blocked writes it): each
    pixel's vector is copied into the padded plane, no transpose.  blocked_out: y is
    written channel-blocked the same way (its rows straight from the row kernel; no
    residual then).
    """
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    HW = H * W
    OHW = OH * OW
    V = nchwc.B
    nb = (C + V - 1) // V
    xf = x.reshape(N * C * HW)
    yf = y.reshape(N * C * OHW)
    inner = 0 if has_res else act
    zero_plane_borders(plane_ws, H, W, HP, WP, pad_top, pad_left)
    for t in prange(N * nb):
        n = t // nb
        blk = t % nb
        c0 = blk * V
        cn = min(V, C - c0)
        tid = numba.get_thread_id()
        P = plane_ws[tid]
        ob = out_ws[tid]
        bv = bias_ws[tid]
        for c in range(V):
            bv[c] = b[c0 + c] if c < cn else 0.0
        base = (n * C + c0) * HW
        ybase = (n * C + c0) * OHW
        wb = wt[blk]
        done = 0  # input rows in the blocked plane so far
        for p0 in range(0, OH, band):
            p1 = min(OH, p0 + band)
            need = min(H, (p1 - 1) * sh - pad_top + (R - 1) * dh + 1)
            if need > done:
                plane_rows_in(xf, base, HW, W, cn, P, offs, done, need, blocked_in)
                done = need
            if blocked_out:  # rows straight into y's block: (n, blk) starts at ybase
                for p in range(p0, p1):
                    blocked_row(P, p * sh * WP * V, dh * WP * V, sw, dw, R, OW, wb, bv, inner,
                                 yf, ybase + p * OW * V)
                continue
            for p in range(p0, p1):
                blocked_row(P, p * sh * WP * V, dh * WP * V, sw, dw, R, OW, wb, bv, inner,
                             ob, p * OW * V)
            plane_rows_out(ob, yf, ybase, OHW, OW, cn, p0, p1, res, n, c0, act, has_res)
