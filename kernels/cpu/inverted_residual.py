"""An inverted residual block (expansion 1x1, depthwise, projection 1x1) streamed by rows:

    z[k, i, j] = act_e(b_e[k] + sum_c w_e[k, c] * x[n, c, i, j])
    d[k, p, q] = act_d(b_d[k] + sum_(r, s) w_d[k, r, s] * zp[k, p*sh + r*dh, q*sw + s*dw])
    y[n, m, p, q] = act_p(b_p[m] + sum_k w_p[m, k] * d[k, p, q] (+ res[n, m, p, q]))

with zp the zero-padded z.  The expanded tensor z is the largest of the block (6x the
input's channels) and each of its elements feeds only R*R depthwise products: written
to memory and read back it costs more than the arithmetic around it (16->96 channels at
112x112: 4.8 MB each way).  Here it never leaves the thread's cache.

A task is (image, band of output rows).  It keeps the padded expanded rows that its
depthwise window needs in a ring of channel-blocked rows (NCHW16c: a block's rows are
WP pixel vectors of 16 channels; row q lives in slot q % RB, and is also copied to slot
RB + q % RB when q % RB < span - 1, span = (R-1)*dh + 1, so every window of span rows is
contiguous at one row stride).  For each output row it computes the expanded rows not
yet in the ring (per 32-channel panel and 7-pixel group one zmm.gemm_tile_t_blocked,
epilogue fused; rows in the padding are zero), runs the depthwise row of every
16-channel block (depthwise.blocked_row) into a row buffer of pixel vectors, and
projects that row into y (zmm.gemm_tile_t_taps_c16 with the channel blocks as taps,
bias, residual and activation in the store).  Only the rows where two bands meet are
expanded twice.  The ring's border columns and the row buffer's padding pixels (up to
a whole 7-pixel group) are zeroed at the start of every call and never written after.
"""
import numba
import numpy as np
from numba import njit, prange

from .depthwise import blocked_row
from .nchwc import copy_vector, to_blocked
from .zmm import (KC_T, MP, NR, _copy_padded, gemm_tile_t_blocked, gemm_tile_t_taps_c16,
                  gemm_tile_t_taps_c16_16)

V = 16  # channels per block


@njit(inline="always")
def _expand_row(xf, n, C, H, W, q, pad_top, pad_left, WP, wf1, b1, a1, K, ring, bstride, slot,
                scratch):
    """Padded expanded row q into ring slot ``slot`` (all blocks): the 1x1 of input row
    q - pad_top, or zeros where that row is padding."""
    ih = q - pad_top
    row0 = (slot * WP + pad_left) * V
    if ih < 0 or ih >= H:
        for blk in range(K // V):
            seg = ring[blk * bstride + row0:blk * bstride + row0 + W * V]
            for i in range(seg.shape[0]):
                seg[i] = 0.0
        return
    HW = H * W
    npg = (K + NR - 1) // NR
    for c0 in range(0, C, KC_T):
        kc = min(KC_T, C - c0)
        acc = 1 if c0 > 0 else 0
        fin = 1 if c0 + kc >= C else 0
        for r0 in range(0, K, NR):
            nr = min(NR, K - r0)
            wo = c0 * npg * NR + (r0 // NR) * kc * NR
            yo = (r0 // V) * bstride + row0
            xo = (n * C + c0) * HW + ih * W
            for j0 in range(0, W, MP):
                npx = min(MP, W - j0)
                if npx == MP:
                    gemm_tile_t_blocked(xf, xo + j0, HW, wf1, wo, kc, ring, yo + j0 * V, bstride,
                                        nr, MP, b1, r0, a1, acc, fin)
                else:
                    _copy_padded(xf, xo + j0, HW, kc, npx, scratch, MP)
                    gemm_tile_t_blocked(scratch, 0, MP, wf1, wo, kc, ring, yo + j0 * V, bstride,
                                        nr, npx, b1, r0, a1, acc, fin)


@njit(inline="always")
def _transpose_row(xf, n, C, H, W, q, pad_top, pad_left, WP, ring, bstride, slot, offs):
    """Padded row q of x itself (no expansion; C a multiple of 16, W >= 16) into ring slot
    ``slot``, channel-blocked: 16 pixels of 16 channels per register transposition (a
    row's last group starts at W - 16, rewriting a few pixels with their own values)."""
    ih = q - pad_top
    row0 = (slot * WP + pad_left) * V
    HW = H * W
    for blk in range(C // V):
        o = blk * bstride + row0
        if ih < 0 or ih >= H:
            seg = ring[o:o + W * V]
            for i in range(seg.shape[0]):
                seg[i] = 0.0
            continue
        xo = (n * C + blk * V) * HW + ih * W
        for f0 in range(0, W, V):
            f = min(f0, W - V)
            to_blocked(xf, xo + f, HW, V, ring[o + f * V:], offs, 0)


@njit(parallel=True, cache=True)
def inverted_residual_rows(x, expand, wp1, b1, a1, wt2, b2, a2, R, sh, sw, pad_top, pad_left,
                           WP, dh, dw, wp3, b3, a3, y, res, has_res, nbands, RB, ring_ws, row_ws,
                           edge_ws):
    """The block of x (N, C, H, W) into y (N, K2, OH, OW) (res: y's shape when has_res).

    expand: wp1 is zmm.pack_panels of the (K, C) expansion weight (width NR, chunk KC_T)
    with bias b1 and activation a1; without it the depthwise reads x itself (K = C, a
    multiple of 16, W >= 16).  wt2 (K/16, R*R, 16): depthwise.pack_blocked of the
    (K, 1, R, R) depthwise weight (K a multiple of 16, R 3 or 5), b2 (K,), a2, stride
    (sh, sw), padding (pad_top, pad_left) within a padded width WP, dilation (dh, dw).
    wp3: zmm.pack_panels of the (K2, K) projection weight, width NR, in one chunk: the
    channel-vectorized tile reads the row's pixel vectors (zmm.gemm_tile_t_taps_c16, the
    channel blocks as taps; a last panel of <= 16 channels on the 16-channel tile).
    nbands: row bands per image (tasks: N * nbands); RB >= span ring slots.
    ring_ws (threads, >= K/16 * (RB + span - 1) * WP * 16), row_ws (threads, >= K/16 *
    ceil(OW/7)*7 * 16), edge_ws (threads, >= min(C, KC_T) * MP).
    """
    N, C, H, W = x.shape
    K2, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    nb = wt2.shape[0]
    K = nb * V
    span = (R - 1) * dh + 1
    NS = RB + span - 1
    bstride = NS * WP * V
    OWP = (OW + MP - 1) // MP * MP
    rstride = OWP * V
    OHW = OH * OW
    toff = np.empty(nb, np.int64)
    for t in range(nb):
        toff[t] = t * rstride
    offs = np.empty(V, np.int64)
    for i in range(V):
        offs[i] = i * V
    for tid in range(ring_ws.shape[0]):
        ring = ring_ws[tid]
        for blk in range(nb):
            for s in range(NS):
                r = blk * bstride + s * WP * V
                for i in range(pad_left * V):
                    ring[r + i] = 0.0
                for i in range((pad_left + W) * V, WP * V):
                    ring[r + i] = 0.0
        ob = row_ws[tid]
        for i in range(nb * rstride):
            ob[i] = 0.0
    xf = x.reshape(-1)
    yf = y.reshape(-1)
    rf = res.reshape(-1)
    wf1 = wp1.reshape(-1)
    wf3 = wp3.reshape(-1)
    rows = (OH + nbands - 1) // nbands
    for t in prange(N * nbands):
        n = t // nbands
        p0 = (t % nbands) * rows
        p1 = min(OH, p0 + rows)
        tid = numba.get_thread_id()
        ring = ring_ws[tid]
        ob = row_ws[tid]
        scratch = edge_ws[tid]
        done = p0 * sh  # padded expanded rows below this one are in the ring
        for p in range(p0, p1):
            q0 = p * sh
            for q in range(max(done, q0), q0 + span):
                slot = q % RB
                if expand:
                    _expand_row(xf, n, C, H, W, q, pad_top, pad_left, WP, wf1, b1, a1, K, ring,
                                bstride, slot, scratch)
                else:
                    _transpose_row(xf, n, C, H, W, q, pad_top, pad_left, WP, ring, bstride,
                                   slot, offs)
                if slot < span - 1:  # the window that wraps reads it from RB + slot
                    a = (slot * WP + pad_left) * V
                    d = ((RB + slot) * WP + pad_left) * V
                    for blk in range(nb):
                        o = blk * bstride
                        for i in range(0, W * V, V):
                            copy_vector(ring, o + a + i, ring, o + d + i)
            done = q0 + span
            w0 = (q0 % RB) * WP * V
            for blk in range(nb):
                blocked_row(ring, blk * bstride + w0, dh * WP * V, sw, dw, R, OW, wt2[blk],
                            b2[blk * V:(blk + 1) * V], a2, ob, blk * rstride)
            yo = n * K2 * OHW + p * OW
            for r0 in range(0, K2, NR):
                nr = min(NR, K2 - r0)
                for j0 in range(0, OW, MP):
                    if nr > V:
                        gemm_tile_t_taps_c16(ob, j0 * V, 1, toff, nb, wf3, r0 * K, V, yf,
                                             yo + r0 * OHW + j0, OHW, nr, min(MP, OW - j0), b3,
                                             r0, a3, rf, has_res, 0, 1)
                    else:
                        gemm_tile_t_taps_c16_16(ob, j0 * V, 1, toff, nb, wf3, r0 * K, V, yf,
                                                yo + r0 * OHW + j0, OHW, nr, min(MP, OW - j0),
                                                b3, r0, a3, rf, has_res, 0, 1)
