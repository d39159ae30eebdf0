"""Grouped 3x3 convolution with few channels a group (ResNeXt, RegNet), in 16-channel blocks.

    y[n, k, p, q] = act(b[k] + sum_{j < cg, r, s} w[k, j, r, s]
                        * xp[n, (k // cg)*cg + j, p*sh + r*dh, q*sw + s*dw] (+ res[n, k, p, q]))

for groups with cg = 2, 4, 8, 16, 32 or 64 input and output channels each (xp the
zero-padded input).  A task's unit is U = max(16, cg) channels -- a 16-channel block of
whole groups, or one group of 32 or 64 -- whose outputs read only its own inputs, so the
call runs as the blocked depthwise conv does (depthwise.py): one task per (image,
unit), the unit's input planes transposed into a padded plane whose pixels hold U
channels, each output row of each 16-channel output block one ``nchwc`` row call, the
rows transposed back.

cg = 2, 4, 8: the row is the depthwise row with cg copies of every input vector, copy
j rotated by j lanes within each group of cg lanes, so that lane c of copy j holds
input channel c' = c - c%cg + (c%cg + j)%cg of lane c's own group; each copy has its
own weight vectors:

    acc[c] += wt[blk, j*9 + t, c] * xvec[c'],
    wt[blk, j*9 + t, c] = w[16 blk + c, (c%cg + j)%cg, t // 3, t % 3]

(cg vector FMAs and cg - 1 shuffles a tap for 16 output channels).  cg = 16, 32, 64: the
16 outputs of a block are one group's, so input channel j of a pixel is broadcast to
all lanes (an FMA's memory operand), wt[blk, j*9 + t, c] = w[16 blk + c, j, t // 3, t % 3].
An im2col GEMM of a group has cg-row panels and 9*cg-deep dot products instead.
"""
import numba
from numba import njit, prange

from . import FASTMATH, nchwc
from .depthwise import plane_rows_in, plane_rows_out, zero_plane_borders


@njit(cache=True)
def pack_grouped(w, cg, out):
    """out[blk, j*R*S + t, c] = w[16*blk + c, j', t // S, t % S] with j' = (c%cg + j)%cg for
    cg < 16 and j for cg >= 16 (module docstring), zero beyond the last channel;
    w (K, cg, R, S)."""
    K, _, R, S = w.shape
    for blk in range(out.shape[0]):
        for j in range(cg):
            for t in range(R * S):
                for c in range(nchwc.B):
                    k = blk * nchwc.B + c
                    v = 0.0
                    if k < K:
                        jj = j if cg >= nchwc.B else (c % cg + j) % cg
                        v = w[k, jj, t // S, t % S]
                    out[blk, j * R * S + t, c] = v


@njit(inline="always")
def grouped_row(P, p_off, rs, sw, dw, cg, OW, wb, bv, act, ob, o_off):
    """One output row of a 16-channel output block (pixels of P hold U = max(16, cg)
    channels): for cg < 16 QB pixels a step with shared input columns for dilation 1 and
    stride 1 or 2, one pixel a step otherwise; for cg >= 16 QB pixels a step (one for
    rows shorter than QB), any stride and dilation, with constant steps for dilation 1
    and stride 1 or 2."""
    V = nchwc.B
    if cg >= V:
        U = cg
        if OW < nchwc.QB:
            if cg == 16:
                nchwc.grouped_row3x3_b16_q1(P, p_off, rs, dw * U, sw * U, OW, wb, 0, bv, 0,
                                            act, ob, o_off)
            elif cg == 32:
                nchwc.grouped_row3x3_b32_q1(P, p_off, rs, dw * U, sw * U, OW, wb, 0, bv, 0,
                                            act, ob, o_off)
            else:
                nchwc.grouped_row3x3_b64_q1(P, p_off, rs, dw * U, sw * U, OW, wb, 0, bv, 0,
                                            act, ob, o_off)
        elif dw == 1 and sw == 1:  # the column and pixel steps compile-time constants
            if cg == 16:
                nchwc.grouped_row3x3_s1_b16(P, p_off, rs, U, U, OW, wb, 0, bv, 0, act, ob, o_off)
            elif cg == 32:
                nchwc.grouped_row3x3_s1_b32(P, p_off, rs, U, U, OW, wb, 0, bv, 0, act, ob, o_off)
            else:
                nchwc.grouped_row3x3_s1_b64(P, p_off, rs, U, U, OW, wb, 0, bv, 0, act, ob, o_off)
        elif dw == 1 and sw == 2:
            if cg == 16:
                nchwc.grouped_row3x3_s2_b16(P, p_off, rs, U, 2 * U, OW, wb, 0, bv, 0, act, ob,
                                            o_off)
            elif cg == 32:
                nchwc.grouped_row3x3_s2_b32(P, p_off, rs, U, 2 * U, OW, wb, 0, bv, 0, act, ob,
                                            o_off)
            else:
                nchwc.grouped_row3x3_s2_b64(P, p_off, rs, U, 2 * U, OW, wb, 0, bv, 0, act, ob,
                                            o_off)
        elif cg == 16:
            nchwc.grouped_row3x3_b16(P, p_off, rs, dw * U, sw * U, OW, wb, 0, bv, 0, act, ob,
                                     o_off)
        elif cg == 32:
            nchwc.grouped_row3x3_b32(P, p_off, rs, dw * U, sw * U, OW, wb, 0, bv, 0, act, ob,
                                     o_off)
        else:
            nchwc.grouped_row3x3_b64(P, p_off, rs, dw * U, sw * U, OW, wb, 0, bv, 0, act, ob,
                                     o_off)
    elif dw == 1 and OW >= nchwc.QB and sw == 1:
        if cg == 2:
            nchwc.grouped_row3x3_s1_g2(P, p_off, rs, V, V, OW, wb, 0, bv, 0, act, ob, o_off)
        elif cg == 4:
            nchwc.grouped_row3x3_s1_g4(P, p_off, rs, V, V, OW, wb, 0, bv, 0, act, ob, o_off)
        else:
            nchwc.grouped_row3x3_s1_g8(P, p_off, rs, V, V, OW, wb, 0, bv, 0, act, ob, o_off)
    elif dw == 1 and OW >= nchwc.QB and sw == 2:
        if cg == 2:
            nchwc.grouped_row3x3_s2_g2(P, p_off, rs, V, 2 * V, OW, wb, 0, bv, 0, act, ob, o_off)
        elif cg == 4:
            nchwc.grouped_row3x3_s2_g4(P, p_off, rs, V, 2 * V, OW, wb, 0, bv, 0, act, ob, o_off)
        else:
            nchwc.grouped_row3x3_s2_g8(P, p_off, rs, V, 2 * V, OW, wb, 0, bv, 0, act, ob, o_off)
    elif cg == 2:
        nchwc.grouped_row3x3_g2(P, p_off, rs, dw * V, sw * V, OW, wb, 0, bv, 0, act, ob, o_off)
    elif cg == 4:
        nchwc.grouped_row3x3_g4(P, p_off, rs, dw * V, sw * V, OW, wb, 0, bv, 0, act, ob, o_off)
    else:
        nchwc.grouped_row3x3_g8(P, p_off, rs, dw * V, sw * V, OW, wb, 0, bv, 0, act, ob, o_off)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def grouped_conv2d_blocked(x, wt, b, y, cg, sh, sw, pad_top, pad_left, HP, WP, dh, dw, act,
                           res, has_res, offs, plane_ws, out_ws, bias_ws, band):
    """Grouped 3x3 conv (module docstring) of x (N, C, H, W) into y (N, C, OH, OW), C a
    multiple of cg; wt (ceil(C/16), 9*cg, 16) from pack_grouped.  One task per (image,
    unit of U = max(16, cg) channels).  Workspaces a thread: plane_ws >= HP*WP*U (offs[f]
    the offset of input pixel f's first channel there, U apart), out_ws >= OH*OW*U (each
    of the unit's output blocks its own OH*OW*16), bias_ws >= 16.  The bands of ``band``
    output rows are depthwise_conv2d_blocked's (needs H*W >= 16 and OH*OW >= 16).  A
    partial last block (cg < 16) holds whole groups, its unused lanes never written
    back."""
    N, C, H, W = x.shape
    OH, OW = y.shape[2], y.shape[3]
    HW = H * W
    OHW = OH * OW
    V = nchwc.B
    U = max(V, cg)
    nbu = U // V  # 16-channel blocks a unit, in and out
    nu = (C + U - 1) // U
    xf = x.reshape(N * C * HW)
    yf = y.reshape(N * C * OHW)
    inner = 0 if has_res else act
    # a row of the padded plane as WP*nbu vectors, its interior from pad_left*nbu on
    zero_plane_borders(plane_ws, H, W * nbu, HP, WP * nbu, pad_top, pad_left * nbu)
    for t in prange(N * nu):
        n = t // nu
        u = t % nu
        c0 = u * U
        cn = min(U, C - c0)
        tid = numba.get_thread_id()
        P = plane_ws[tid]
        ob = out_ws[tid]
        bv = bias_ws[tid]
        done = 0  # input rows in the blocked plane so far
        for p0 in range(0, OH, band):
            p1 = min(OH, p0 + band)
            need = min(H, (p1 - 1) * sh - pad_top + 2 * dh + 1)
            if need > done:
                for bi in range(nbu):
                    plane_rows_in(xf, (n * C + c0 + bi * V) * HW, HW, W, min(V, cn - bi * V),
                                  P[bi * V:], offs, done, need, False)
                done = need
            for bo in range(nbu):
                cb = c0 + bo * V
                cnb = min(V, C - cb)
                for c in range(V):
                    bv[c] = b[cb + c] if c < cnb else 0.0
                wb = wt[u * nbu + bo]
                obo = ob[bo * OHW * V:]  # a block's own rows: a band's reach back reads them
                for p in range(p0, p1):
                    grouped_row(P, p * sh * WP * U, dh * WP * U, sw, dw, cg, OW, wb, bv, inner,
                                obo, p * OW * V)
                plane_rows_out(obo, yf, (n * C + cb) * OHW, OHW, OW, cnb, p0, p1, res, n, cb,
                               act, has_res)
