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
yet in the ring (pointwise.pixels_to_blocked: per 32-channel panel and 7-pixel group
one zmm.gemm_tile_t_blocked, epilogue fused; rows in the padding are zero), runs the
depthwise row of every 16-channel block (depthwise.blocked_row) into a row buffer of
pixel vectors, and
projects that row into y (zmm.gemm_tile_t_taps_c16 with the channel blocks as taps,
bias, residual and activation in the store).  Only the rows where two bands meet are
expanded twice.  On maps too short for that (14x14, 7x7) a task is (image, group of
expanded channels) instead: all rows, its channels only, its partial projection into
a workspace that a second pass sums with bias, residual and activation.  The ring's
border columns and the row buffer's padding pixels (up to a whole 7-pixel group) are
zeroed at the start of every call and never written after.

Blocks whose expanded tensor fits the cores' L2 run channel-blocked instead
(fastconv/_algorithms.py, bind_inverted_residual): ``expand_depthwise_blocked`` here
expands a group of 32 channels for the whole image into the thread's padded planes and
filters them in the same task, and the projection reads the channel-blocked result
(pointwise.pointwise_conv2d_from_blocked).

Two other sources fill the ring: x itself, transposed 16 pixels x 16 channels at a
time (a block without expansion), and a "head" conv with any filter and stride in place
of the 1x1 (a network's stem, 3 channels, 3x3 stride 2, feeding its first depthwise
conv): zmm.gemm_tile_t_taps_blocked over the zero-padded input, every (tap, channel)
step of a 7-pixel group in registers, pixels ``stride`` apart (the channel-vectorized
tile broadcasts each pixel, so a strided read costs nothing).
"""
import numba
import numpy as np
from numba import njit, prange

from .depthwise import blocked_row
from .epilogue import apply_row, apply_row_res
from .nchwc import copy_vector, to_blocked
from .pointwise import pixels_to_blocked
from .zmm import (KC_T, MP, NR, PF_GROUPS, gemm_tile_t_taps_blocked, gemm_tile_t_taps_c16,
                  gemm_tile_t_taps_c16_16, gemm_tile_t_taps_c16_24)

V = 16  # channels per block


@njit(inline="always")
def _zero_row(ring, blo, bhi, bstride, row0, W):
    for blk in range(blo, bhi):
        seg = ring[blk * bstride + row0:blk * bstride + row0 + W * V]
        for i in range(seg.shape[0]):
            seg[i] = 0.0


@njit(inline="always")
def _head_row(xf, n, C, HX, WX, W, ih, row0, wf1, b1, a1, k0, k1, ring, bstride, toff1, sh1,
              sw1):
    """Row ih of a head conv (any filter and stride over the zero-padded input, (N, C, HX,
    WX) in xf with slack after it) into the ring row at row0, channels k0 .. k1: per
    32-channel panel and 7-pixel group one zmm.gemm_tile_t_taps_blocked over all (tap,
    channel) steps."""
    ntaps = toff1.shape[0]
    xo = n * C * HX * WX + ih * sh1 * WX
    for r0 in range(k0, k1, NR):
        nr = min(NR, k1 - r0)
        yo = (r0 // V) * bstride + row0
        for j0 in range(0, W, MP):
            gemm_tile_t_taps_blocked(xf, xo + j0 * sw1, HX * WX, toff1, ntaps, sw1, wf1,
                                     r0 * ntaps * C, C, ring, yo + j0 * V, bstride, nr,
                                     min(MP, W - j0), b1, r0, a1)


@njit(inline="always")
def _transpose_row(xf, n, C, HW, W, ih, row0, ring, bstride, offs, blo, bhi):
    """Input row ih itself (no expansion; C a multiple of 16, W >= 16), blocks blo .. bhi,
    into the ring row at row0, channel-blocked: 16 pixels of 16 channels per register
    transposition (a row's last group starts at W - 16, rewriting a few pixels with
    their own values)."""
    for blk in range(blo, bhi):
        o = blk * bstride + row0
        xo = (n * C + blk * V) * HW + ih * W
        for f0 in range(0, W, V):
            f = min(f0, W - V)
            to_blocked(xf, xo + f, HW, V, ring[o + f * V:], offs, 0)


@njit(parallel=True, cache=True)
def inverted_residual_rows(xf, N, C, HX, WX, fill, wp1, b1, a1, toff1, sh1, sw1, H, W, wt2, b2,
                           a2, R, sh, sw, pad_top, pad_left, WP, dh, dw, wp3, b3, a3, y, res,
                           has_res, nbands, csplit, RB, ring_ws, row_ws, edge_ws, part_ws):
    """The block of x (N, C, HX, WX), given flat as xf, into y (N, K2, OH, OW) (res: y's
    shape when has_res); H x W is the depthwise input's map.

    fill says where the depthwise input comes from: 0, x itself (C = K a multiple of 16,
    HX, WX = H, W, W >= 16); 1, the 1x1 expansion of x (HX, WX = H, W): wp1 is
    zmm.pack_panels of the (K, C) weight, width NR, chunk KC_T; 2, a head conv of x (the
    zero-padded input, xf readable MP*sw1 floats past its end): wp1 packs the (K, T*C)
    weight, columns t*C + c for tap t at offset toff1[t] (r*WX + s), width NR in one chunk,
    stride (sh1, sw1).  b1, a1 the expansion's bias and activation.  wt2 (K/16, R*R, 16):
    depthwise.pack_blocked of the (K, 1, R, R) depthwise weight (K a multiple of 16, R 3
    or 5), b2 (K,), a2, stride (sh, sw), padding (pad_top, pad_left) within a padded
    width WP, dilation (dh, dw).  wp3: zmm.pack_panels of the (K2, K) projection weight,
    width NR, in one chunk: the channel-vectorized tile reads the row's pixel vectors
    (zmm.gemm_tile_t_taps_c16, the channel blocks as taps; a last panel of <= 16
    channels on the 16-channel tile, of 17-24 on the 24-channel one).
    nbands: row bands per image; csplit: channel groups per image (one of them 1;
    tasks: N * nbands * csplit).  A channel group expands, filters and projects only its
    K / csplit channels (K a multiple of 32*csplit) for every row -- no row expanded
    twice, for maps too short to band -- into its partial sum in part_ws (csplit, N,
    K2, OH*OW); a second pass adds the partials, the bias and the residual and applies
    the activation.  RB >= span ring slots.
    ring_ws (threads, >= K/16 * (RB + span - 1) * WP * 16), row_ws (threads, >= K/16 *
    ceil(OW/7)*7 * 16), edge_ws (threads, >= min(C, KC_T) * MP with fill 1).
    """
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
    yf = y.reshape(-1)
    rf = res.reshape(-1)
    wf1 = wp1.reshape(-1)
    wf3 = wp3.reshape(-1)
    rows = (OH + nbands - 1) // nbands
    nbc = nb // csplit  # blocks of a channel group
    zeros = np.zeros(K2, np.float32)
    pf = part_ws.reshape(-1)
    for t in prange(N * nbands * csplit):
        n = t // (nbands * csplit)
        p0 = (t // csplit) % nbands * rows
        p1 = min(OH, p0 + rows)
        cg = t % csplit
        blo, bhi = cg * nbc, (cg + 1) * nbc
        tid = numba.get_thread_id()
        ring = ring_ws[tid]
        ob = row_ws[tid]
        scratch = edge_ws[tid]
        done = p0 * sh  # padded expanded rows below this one are in the ring
        for p in range(p0, p1):
            q0 = p * sh
            for q in range(max(done, q0), q0 + span):
                slot = q % RB
                ih = q - pad_top
                row0 = (slot * WP + pad_left) * V
                if ih < 0 or ih >= H:
                    _zero_row(ring, blo, bhi, bstride, row0, W)
                elif fill == 1:
                    pixels_to_blocked(xf, n * C * H * W + ih * W, H * W, C, W, wf1,
                                      (K + NR - 1) // NR, blo * V, bhi * V, ring, row0, bstride,
                                      b1, a1, scratch)
                elif fill == 2:
                    _head_row(xf, n, C, HX, WX, W, ih, row0, wf1, b1, a1, blo * V, bhi * V, ring,
                              bstride, toff1, sh1, sw1)
                else:
                    _transpose_row(xf, n, C, H * W, W, ih, row0, ring, bstride, offs, blo, bhi)
                if slot < span - 1:  # the window that wraps reads it from RB + slot
                    d = ((RB + slot) * WP + pad_left) * V
                    for blk in range(blo, bhi):
                        o = blk * bstride
                        for i in range(0, W * V, V):
                            copy_vector(ring, o + row0 + i, ring, o + d + i)
            done = q0 + span
            w0 = (q0 % RB) * WP * V
            for blk in range(blo, bhi):
                blocked_row(ring, blk * bstride + w0, dh * WP * V, sw, dw, R, OW, wt2[blk],
                            b2[blk * V:(blk + 1) * V], a2, ob, blk * rstride)
            # the projection over this task's blocks: all of them into y with the
            # epilogue, or a channel group's partial sum
            if csplit == 1:
                dst, yo, bias, act = yf, n * K2 * OHW + p * OW, b3, a3
                with_res = 1 if has_res else 0
            else:
                dst, yo, bias, act, with_res = pf, (cg * N + n) * K2 * OHW + p * OW, zeros, 0, 0
            for r0 in range(0, K2, NR):
                nr = min(NR, K2 - r0)
                for j0 in range(0, OW, MP):
                    if nr > V + V // 2:
                        gemm_tile_t_taps_c16(ob, (blo * OWP + j0) * V, 1, toff, bhi - blo, wf3,
                                             r0 * K + blo * V * NR, V, dst, yo + r0 * OHW + j0,
                                             OHW, nr, min(MP, OW - j0), bias, r0, act, rf,
                                             with_res, 0, 1)
                    elif nr > V:  # 17-24 channels: the second 16 on 8-float vectors
                        gemm_tile_t_taps_c16_24(ob, (blo * OWP + j0) * V, 1, toff, bhi - blo,
                                                wf3, r0 * K + blo * V * NR, V, dst,
                                                yo + r0 * OHW + j0, OHW, nr, min(MP, OW - j0),
                                                bias, r0, act, rf, with_res, 0, 1)
                    else:
                        gemm_tile_t_taps_c16_16(ob, (blo * OWP + j0) * V, 1, toff, bhi - blo, wf3,
                                                r0 * K + blo * V * NR, V, dst, yo + r0 * OHW + j0,
                                                OHW, nr, min(MP, OW - j0), bias, r0, act, rf,
                                                with_res, 0, 1)
    if csplit > 1:
        for t in prange(N * K2):
            n = t // K2
            k = t % K2
            row = yf[t * OHW:(t + 1) * OHW]
            first = pf[t * OHW:(t + 1) * OHW]
            for q in range(OHW):
                row[q] = first[q]
            for g in range(1, csplit):
                o = ((g * N + n) * K2 + k) * OHW
                part = pf[o:o + OHW]
                for q in range(OHW):
                    row[q] += part[q]
            if has_res:
                apply_row_res(row, b3[k], rf[t * OHW:(t + 1) * OHW], a3)
            else:
                apply_row(row, b3[k], a3)


@njit(parallel=True, cache=True)
def expand_depthwise_blocked(xf, N, C, H, W, wp1, b1, a1, wt2, b2, a2, R, sh, sw, pad_top,
                             pad_left, HP, WP, dh, dw, OH, OW, d, group, plane_ws, edge_ws):
    """An inverted residual block's expansion 1x1 and depthwise conv in one parallel region,
    into the channel-blocked depthwise output d (N, K/16, OH*OW*16) that the projection
    (pointwise.pointwise_conv2d_from_blocked) reads:

        z[k, i, j] = act_e(b_e[k] + sum_c w_e[k, c] * x[n, c, i, j])
        d[n, k // 16, (p*OW + q)*16 + k % 16]
            = act_d(b_d[k] + sum_(r, s) w_d[k, r, s] * zp[k, p*sh + r*dh, q*sw + s*dw])

    with zp the zero-padded z.  A task is (image, group of ``group`` expanded channels, a
    multiple of 32): it expands its channels for every pixel straight into its thread's
    padded planes of pixel vectors (plane_ws, >= group/16 * HP*WP*16: one
    pointwise.pixels_to_blocked per input row, its 7-pixel groups on
    zmm.gemm_tile_t_blocked; the border stays the zeros written before the tasks), then
    filters each plane row by row (depthwise.blocked_row) into d.  The expanded planes
    never leave the thread's L1/L2 (32 channels of a 14x14 map: 32 KiB) where the
    separate kernels wrote the whole expanded tensor and read it back in another parallel
    region.  x (N, C, H, W) given flat as xf; wp1: zmm.pack_panels of the (K, C) weight,
    width NR, chunk KC_T; b1, a1 its bias and activation; wt2 (K/16, R*R, 16) from
    depthwise.pack_blocked, b2 (K,), a2, stride (sh, sw), padding (pad_top, pad_left)
    within HP x WP, dilation (dh, dw); edge_ws (threads, >= min(C, KC_T)*MP).
    """
    nb = wt2.shape[0]
    K = nb * V
    npg = (K + NR - 1) // NR
    gb = group // V  # blocks per task
    ngroups = (nb + gb - 1) // gb
    bstride = HP * WP * V
    for tid in range(plane_ws.shape[0]):
        P = plane_ws[tid]
        for blk in range(gb):
            for r in range(HP):
                o = blk * bstride + r * WP * V
                if r < pad_top or r >= pad_top + H:
                    for j in range(WP * V):
                        P[o + j] = 0.0
                else:
                    for j in range(pad_left * V):
                        P[o + j] = 0.0
                    for j in range((pad_left + W) * V, WP * V):
                        P[o + j] = 0.0
    wf1 = wp1.reshape(-1)
    df = d.reshape(-1)
    # input rows 1 .. npf prefetch the next task's expansion weights (its panels lie
    # (next blo - blo) * 16 * C floats on from this task's, one chunk where C <= KC_T),
    # each row a slice of every panel: 7x7 and 14x14 blocks read 0.3-0.6 MiB of them
    # from memory inside a model, where the first row of each task otherwise waits
    npf = min(H - 1, PF_GROUPS) if C <= KC_T else 0
    sl = (C * NR + npf - 1) // max(npf, 1)
    pstep = min(16, (sl + C - 1) // C)
    for t in prange(N * ngroups):
        n = t // ngroups
        blo = (t % ngroups) * gb
        bhi = min(nb, blo + gb)
        tid = numba.get_thread_id()
        P = plane_ws[tid]
        scratch = edge_ws[tid]
        ahead = ((t + 1) % ngroups) * gb * V * C - blo * V * C if t + 1 < N * ngroups else 0
        # block blk of the task at plane offset (blk - blo) * bstride
        for ih in range(H):
            pf, step = 0, NR
            if ahead != 0 and 1 <= ih <= npf:
                pf, step = ahead + (ih - 1) * sl, pstep
            pixels_to_blocked(xf, (n * C * H + ih) * W, H * W, C, W, wf1, npg, blo * V, bhi * V,
                              P, ((ih + pad_top) * WP + pad_left) * V - blo * bstride, bstride,
                              b1, a1, scratch, pf, step)
        for blk in range(blo, bhi):
            po = (blk - blo) * bstride
            for p in range(OH):
                blocked_row(P, po + p * sh * WP * V, dh * WP * V, sw, dw, R, OW, wt2[blk],
                            b2[blk * V:(blk + 1) * V], a2, df,
                            ((n * nb + blk) * OH * OW + p * OW) * V)
