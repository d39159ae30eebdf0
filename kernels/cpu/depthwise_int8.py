"""int8 depthwise convolution: each channel's plane against its own int8 filter, straight
from the NCHW planes (no channels-last move, no gathered columns).

    acc[n, c, oh, ow] = sum_(r, s) (xpad[n, c, oh*sh + r*dh, ow*sw + s*dw] - zx) * w[c, r*S + s]

xpad the plane padded with the zero point (so the padding's taps add nothing): the integer
reference's acc - zx * sum(w).  Then int8._finish's epilogue, bit for bit: act(float32(acc)
* scale[c] + b[c] (+ res)), stored as float32 or requantized.

The sums run in float32 and are exact in any order: each product is an integer of at most
255 * 128 in magnitude and every partial sum of at most MAX_TAPS of them stays below 2**24,
where float32 holds every integer (the caller sends larger filters to the general
kernels).  So the plane is the float depthwise kernel's (depthwise.load_plane writes
x - zx, whose padding is the float conv's zero, into a padded float32 plane;
depthwise.plane_sums runs the taps: a 3x3 filter's nine taps in one loop with the weights
in registers, stride 2 from the rows' even and odd columns), with the filter as float32
integers, and int8.finish_row's epilogue follows.

The general int8 kernels had run a depthwise conv as a grouped GEMM of one channel a
group: 11 ms on MobileNetV2's 144@56 (2 threads) against 98 us fp32.  A first kernel of
its own, one pass over the plane per tap (and a strided gather per tap at stride 2),
took 0.23-0.35 ms there and 0.85-1.6 ms on 96@112/2.
"""
import numba
import numpy as np
from numba import njit, prange

from .depthwise import (blocked_row, load_plane, plane_rows_out, plane_sums,
                        zero_plane_borders)
from .int8 import finish_out, finish_row
from .nchwc import to_blocked_int

MAX_TAPS = (1 << 24) // (255 * 128)   # 514: float32 sums of that many products are exact


@njit(parallel=True, cache=True)
def depthwise_int8(x, w, zx, scale, b, act, res, has_res, y, yq, quant_out, inv_sy, zy, qmin,
                   qmax, sh, sw, dh, dw, pt, pl, OH, OW, HP, WP, plane_ws, out_ws, q_ws):
    """x (N, C, H, W) uint8 or int8; w (C, 1, R, S) float32 holding the int8 filters,
    R*S <= MAX_TAPS; zx int32; scale, b (C,) float32; y or yq (N, C, OH*OW) float32 or
    int8/uint8 (quant_out); res (N, C, OH*OW) float32 when has_res.  act: 0 none, 1 relu,
    2 relu6.  HP, WP: the padded plane the taps read (at least H + pt rows and W + pl
    columns, and all that the last output reads).  Each task, one (image, channel) plane,
    clears its thread's padded plane (plane_ws, (threads, >= HP*WP)) and writes its sums
    in out_ws (threads, >= OH*WP), float32, and at stride 1 its integers in q_ws (threads,
    >= OH*WP) of yq's type: the caller clears nothing."""
    N, C, H, W = x.shape
    R, S = w.shape[2], w.shape[3]
    split = sw == 2 and dw == 1 and R == 3 and S == 3
    flat_stride = sh == 1 and sw == 1
    zf = np.float32(zx)
    for t in prange(N * C):
        n = t // C
        c = t - n * C
        tid = numba.get_thread_id()
        plane = plane_ws[tid, :HP * WP]   # x - zx, zero in the padding
        for j in range(HP * WP):
            plane[j] = 0.0
        buf = out_ws[tid]
        load_plane(x[n, c], plane, plane, H, W, WP, pt, pl, split, zf)
        plane_sums(plane, plane, w, c, buf, R, S, sh, sw, dh, dw, WP, OH, OW, split)
        sc, bc = scale[c], b[c]
        P = OH * OW
        if flat_stride and not has_res:
            # one epilogue over the flat buffer (rows at the padded width, the columns
            # between them finished and dropped), then row copies: per-row loops of 7 to
            # 56 elements had run mostly in their scalar remainders
            L = (OH - 1) * WP + OW
            if quant_out:
                qrow = q_ws[tid, :L]
                finish_row(buf[:L], sc, bc, act, res[0, 0, :0], False, y[0, 0, :0], qrow,
                           True, inv_sy, zy, qmin, qmax)
                for oh in range(OH):
                    dst = yq[n, c, oh * OW:(oh + 1) * OW]
                    src = qrow[oh * WP:oh * WP + OW]
                    for j in range(OW):
                        dst[j] = src[j]
            else:
                finish_row(buf[:L], sc, bc, act, res[0, 0, :0], False, buf[:L], yq[0, 0, :0],
                           False, inv_sy, zy, qmin, qmax)
                for oh in range(OH):
                    dst = y[n, c, oh * OW:(oh + 1) * OW]
                    src = buf[oh * WP:oh * WP + OW]
                    for j in range(OW):
                        dst[j] = src[j]
        elif flat_stride:   # the residual's rows are OW apart: row by row
            for oh in range(OH):
                p0 = oh * OW
                finish_row(buf[oh * WP:oh * WP + OW], sc, bc, act, res[n, c, p0:p0 + OW],
                           True, y[0, 0, :0] if quant_out else y[n, c, p0:p0 + OW],
                           yq[n, c, p0:p0 + OW] if quant_out else yq[0, 0, :0], quant_out,
                           inv_sy, zy, qmin, qmax)
        else:   # strided sums are laid out as the output plane: one epilogue
            finish_row(buf[:P], sc, bc, act, res[n, c] if has_res else res[0, 0, :0],
                       has_res, y[0, 0, :0] if quant_out else y[n, c],
                       yq[n, c] if quant_out else yq[0, 0, :0], quant_out, inv_sy, zy, qmin,
                       qmax)


@njit(parallel=True, cache=True)
def depthwise_int8_blocked(x, wt, zx, scale, b, act, res, has_res, y, yq, quant_out, inv_sy,
                           zy, qmin, qmax, R, sh, sw, pt, pl, HP, WP, dh, dw, OH, OW, offs,
                           plane_ws, out_ws, bias_ws, band, yb_ws):
    """The same convolution through 16-channel blocks, the float depthwise_blocked kernel's
    way (R x R filters, R = 3, 5 or 7; input and output planes of >= 16 pixels): a task
    is one (image, 16-channel block); band by band, the input rows it newly needs are
    converted to x - zx and transposed in one step (nchwc.to_blocked_int) into the padded
    plane of pixel vectors (plane_ws, its border zeroed once a call), each output row is
    one depthwise_row call (R*R vector FMAs a pixel for 16 channels, the filters wt
    (ceil(C/16), R*R, 16) float32 integers, no bias: the exact sums) into out_ws, and
    finished on their way back, 16 pixel vectors a step (finish_out), transposed straight
    into y / yq (N, C, OH*OW; the requantized integers stored as bytes).  With a residual
    (an NCHW array) the sums go back first, into float32 planes (yb_ws, (threads, >=
    16*OH*OW)), and finish_row finishes them there.  offs, band, HP, WP, bias_ws: as
    depthwise_conv2d_blocked's.  960@7: 44 us finishing each 49-output plane row by row,
    against the fp32 kernel's 18; 144@56 110-130 us going through float planes and a
    byte loop, against 74."""
    N, C, H, W = x.shape
    V = 16
    nb = (C + V - 1) // V
    HW = H * W
    OHW = OH * OW
    xf = x.reshape(N * C * HW)
    yf, yqf = y.reshape(y.size), yq.reshape(yq.size)
    zf = np.float32(zx)
    zero_plane_borders(plane_ws, H, W, HP, WP, pt, pl)
    for t in prange(N * nb):
        n = t // nb
        blk = t % nb
        c0 = blk * V
        cn = min(V, C - c0)
        tid = numba.get_thread_id()
        P = plane_ws[tid]
        ob = out_ws[tid]
        bv = bias_ws[tid]
        yb = yb_ws[tid]
        for c in range(V):
            bv[c] = 0.0
        sv = np.zeros(V, np.float32)   # the block's scales and biases, zero past its end
        sb = np.zeros(V, np.float32)
        for c in range(cn):
            sv[c] = scale[c0 + c]
            sb[c] = b[c0 + c]
        wb = wt[blk]
        done = 0   # input rows in the padded plane so far
        for p0 in range(0, OH, band):
            p1 = min(OH, p0 + band)
            need = min(H, (p1 - 1) * sh - pt + (R - 1) * dh + 1)
            if need > done:   # (16 pixels a transpose, the last group ending at need's)
                hi = need * W
                for f0 in range(done * W, hi, V):
                    f = max(0, min(f0, hi - V))
                    to_blocked_int(xf, (n * C + c0) * HW + f, HW, cn, P, offs, f, zf)
                done = need
            for p in range(p0, p1):
                blocked_row(P, p * sh * WP * V, dh * WP * V, sw, dw, R, OW, wb, bv, 0, ob,
                            p * OW * V)
            q0, q1 = p0 * OW, p1 * OW
            if not has_res:   # finished on the way out, transposed into y / yq
                hi = q1   # 16-pixel groups; a short band's last reaches back (same values)
                for f0 in range(max(0, min(q0, hi - V)), hi, V):
                    f = max(0, min(f0, hi - V))
                    if quant_out:
                        finish_out(ob, f * V, yqf, (n * C + c0) * OHW + f, OHW, cn, sv, sb,
                                   act, inv_sy, zy, qmin, qmax)
                    else:
                        finish_out(ob, f * V, yf, (n * C + c0) * OHW + f, OHW, cn, sv, sb,
                                   act, inv_sy, zy, qmin, qmax)
                continue
            # with a residual (NCHW) the sums go back first and finish_row finishes them
            plane_rows_out(ob, yb, 0, OHW, OW, cn, p0, p1, res, n, c0, 0, False)
            for c in range(cn):
                k = c0 + c
                finish_row(yb[c * OHW + q0:c * OHW + q1], scale[k], b[k], act,
                           res[n, k, q0:q1], True,
                           y[0, 0, :0] if quant_out else y[n, k, q0:q1],
                           yq[n, k, q0:q1] if quant_out else yq[0, 0, :0], quant_out,
                           inv_sy, zy, qmin, qmax)
