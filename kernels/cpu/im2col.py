"""im2col + GEMM: lower the convolution to one matrix product per image and group.

For image n and group g the column matrix is

    cols[(c, r, s), (p, q)] = xp[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw]      (Cg*R*S, OH*OW)

and the output block is  y[n, g*Kg:(g+1)*Kg] = act(W_g @ cols + b)  with
W_g = w[g*Kg:(g+1)*Kg].reshape(Kg, Cg*R*S).  Every kernel here takes xp as
``_algorithms.phased_input`` makes it: the zero-padded input, with each row
split into its sw column phases when sw > 1 (see im2col_tile).

Parallel layout: Numba owns the cores.  Tasks are (n, g, pixel tile, output-channel
block); each task writes its slice of ``cols`` into its own thread's workspace (sized
to stay in L2) and calls single-threaded SGEMM through ``np.dot`` (SciPy's BLAS), so
exactly one thread pool runs.  (1x1 convolutions have their own copy-free family in
pointwise.py.)  The residual and the activation are fused into the epilogue.

conv2d_implicit_packed computes the same product with no column matrix: the
channel-vectorized micro-kernel reads xp in place, all taps of a channel chunk in
one reduction (an implicit GEMM).
"""
import numba
import numpy as np
from numba import njit, prange

from . import FASTMATH
from .blas import sgemm_rm
from .epilogue import epilogue_tile
from .tiles import gather_pixels, gemm_task, register_gemm_tile
from .zmm import (MP, MR, NR, PF_GROUPS, _copy_padded, gemm_block, gemm_block_t,
                  gemm_tile_taps, gemm_tile_taps16, gemm_tile_taps16_c3, gemm_tile_taps_c3,
                  gemm_tile_t_taps, gemm_tile_t_taps_edges,
                  gemm_tile_t_taps_edges_pf)


@njit(inline="always")
def im2col_tile(cols, xp, n, c_begin, Cg, R, S, p0, T, OW, sh, sw, dh, dw):
    """cols[(c, r, s), j] = xpad[n, c_begin + c, oh*sh + r*dh, ow*sw + s*dw] for the
    output pixels p0 + j (j < T) of the tile.

    xp is xpad itself at sw == 1; for sw > 1 its rows are split into sw column
    phases (pad.pad_nchw_phased), so every column row is a unit-stride copy:
    a strided gather ran at ~1.3 ns an element (the 7x7/2 stem spent 40 % of
    its time there), the phase split costs one pass over the input."""
    ws = xp.shape[3] // sw
    for c in range(Cg):
        plane = xp[n, c_begin + c]
        for r in range(R):
            for s in range(S):
                off = s * dw
                gather_pixels(cols[(c * R + r) * S + s], plane, p0, T, OW, sh, 1, r * dh,
                              (off % sw) * ws + off // sw)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_im2col(xp, wmat, b, y3, OW, sh, sw, dh, dw, groups, R, S, act, res3, has_res,
                  tile, kblock, cols_ws, scal_ws):
    """im2col + SGEMM of padded (phase-split) xp (N, C, HP, WP) with wmat (K, Cg*R*S) into
    y3 (N, K, OH*OW).

    res3 (N, K, OH*OW) is added before the activation when has_res.

    tile: output pixels per task; kblock: output channels per task;
    cols_ws: (threads, >= Cg*R*S*tile) float32; scal_ws: (threads, >= 2) float32.
    """
    N, C = xp.shape[0], xp.shape[1]
    K, CRS = wmat.shape
    P = y3.shape[2]
    Kg = K // groups
    Cg = C // groups
    ntiles = (P + tile - 1) // tile
    nkb = (Kg + kblock - 1) // kblock
    for t in prange(N * groups * ntiles * nkb):
        n, g, p0, T, k0, k1 = gemm_task(t, groups, ntiles, nkb, tile, kblock, P, Kg)
        tid = numba.get_thread_id()
        cols = cols_ws[tid, :CRS * T].reshape((CRS, T))
        im2col_tile(cols, xp, n, g * Cg, Cg, R, S, p0, T, OW, sh, sw, dh, dw)
        sgemm_rm(k1 - k0, T, CRS, wmat, k0 * CRS, CRS, cols, 0, T,
                 y3, (n * K + k0) * P + p0, P, 0.0, scal_ws[tid])
        epilogue_tile(y3, n, k0, k1, p0, T, b, act, res3, has_res)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_im2col_register(xp, wmat, b, y3, OW, sh, sw, dh, dw, groups, R, S, act, res3,
                           has_res, tile, cols_ws, acc_ws):
    """im2col with the product done by register_gemm_tile instead of SGEMM, for short
    reductions (Cg*R*S small: a 3-channel image's 3x3 stem has 27).

    Same tasks and column gather as conv2d_im2col, all output channels of a
    group per task; cols_ws: (threads, >= Cg*R*S*tile); acc_ws: (threads, 4, >= tile).
    """
    N, C = xp.shape[0], xp.shape[1]
    K, CRS = wmat.shape
    P = y3.shape[2]
    Kg = K // groups
    Cg = C // groups
    ntiles = (P + tile - 1) // tile
    for t in prange(N * groups * ntiles):
        n, g, p0, T, k0, k1 = gemm_task(t, groups, ntiles, 1, tile, Kg, P, Kg)
        tid = numba.get_thread_id()
        cols = cols_ws[tid, :CRS * T].reshape((CRS, T))
        im2col_tile(cols, xp, n, g * Cg, Cg, R, S, p0, T, OW, sh, sw, dh, dw)
        res2 = res3[n] if has_res else res3[0]
        register_gemm_tile(cols, 0, 0, T, wmat, k0, k1, acc_ws[tid], y3[n], p0, b, act, res2,
                           has_res)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def conv2d_im2col_packed(xp, wp, width, b, y3, OW, sh, sw, dh, dw, groups, R, S, act, res3,
                         has_res, tile, kblock, cols_ws, sc_ws, xp_ws):
    """im2col of padded (phase-split) xp (N, C, HP, WP) times packed weights into
    y3 (N, K, OH*OW).

    wp: zmm.pack_panels of the (K, Cg*R*S) weight matrix, width MR (chunk KC:
    zmm.gemm_block, pixel vectors) or NR (chunk KC_T: zmm.gemm_block_t, channel
    vectors, for small maps); kblock a multiple of the width;
    cols_ws (threads, >= Cg*R*S*ceil16(tile));
    sc_ws (threads, >= MR*NR) and xp_ws (threads, >= KC*JB): micro-kernel scratch.
    Column rows are padded to a multiple of 16 floats so they start on cache lines.
    """
    N, C = xp.shape[0], xp.shape[1]
    K = y3.shape[1]
    P = y3.shape[2]
    Kg = K // groups
    Cg = C // groups
    CRS = Cg * R * S
    npg = (Kg + width - 1) // width
    ntiles = (P + tile - 1) // tile
    nkb = (Kg + kblock - 1) // kblock
    yf = y3.reshape(-1)
    rf = res3.reshape(-1)
    wf = wp.reshape(-1)
    for t in prange(N * groups * ntiles * nkb):
        n, g, p0, T, k0, k1 = gemm_task(t, groups, ntiles, nkb, tile, kblock, P, Kg)
        tid = numba.get_thread_id()
        ldt = (T + 15) // 16 * 16
        cols = cols_ws[tid, :CRS * ldt]
        im2col_tile(cols.reshape((CRS, ldt)), xp, n, g * Cg, Cg, R, S, p0, T, OW, sh, sw, dh, dw)
        w_base = g * npg * CRS * width
        pan0 = (k0 - g * Kg) // width
        # the epilogue (bias, residual, activation) is fused into the tiles' stores
        if width == NR:
            gemm_block_t(wf, w_base, npg, pan0, CRS, cols, 0, ldt, T,
                         yf, (n * K + k0) * P + p0, P, k1 - k0, xp_ws[tid],
                         b, k0, act, rf, has_res)
        else:
            gemm_block(wf, w_base, npg, pan0, CRS, cols, 0, ldt, T,
                       yf, (n * K + k0) * P + p0, P, k1 - k0, sc_ws[tid], xp_ws[tid],
                       b, k0, act, rf, has_res, 0)


@njit(inline="always")
def _tap_offsets(R, S, dh, dw, sw, WPF):
    """Tap (r, s)'s offset into one channel plane of the phase-split padded input
    (pad.pad_nchw_phased, rows WPF = sw*ws wide): r*dh rows down, then column s*dw's
    phase and its shift within it -- so output pixels q.. of a row read a unit-stride run."""
    ws = WPF // sw
    toff = np.empty(R * S, np.int64)
    for tap in range(R * S):
        r = tap // S
        s = tap % S
        toff[tap] = r * dh * WPF + ((s * dw) % sw) * ws + (s * dw) // sw
    return toff


@njit(inline="always")
def live_rows(p, sh, dh, pt, H, R):
    """The kernel rows [lo, hi) whose taps read real input rows for output row p:
    0 <= p*sh - pt + r*dh < H.  The other rows' taps read only the zero padding and add
    nothing (border rows of a 7x7 map: 3 of 9 taps of a 3x3).  A row reading padding
    only (pt >= R*dh) keeps every tap, which then sums to zero."""
    top = p * sh - pt
    lo = 0
    while lo < R and top + lo * dh < 0:
        lo += 1
    hi = R
    while hi > lo and top + (hi - 1) * dh >= H:
        hi -= 1
    if lo >= hi:
        return 0, R
    return lo, hi


@njit(cache=True)
def edge_codes(ngroups, R, S, sw, dw, pl, W):
    """codes[g, r*S + s] for the full MP-pixel group g of an output row (pixels g*MP ..):
    1 when its first pixel reads only padding at tap (r, s) (input column
    g*MP*sw + s*dw - pl < 0), else 2 when its last pixel does (>= W), else 0 -- the
    pixel zmm.gemm_tile_t_taps_edges leaves out of that tap."""
    codes = np.zeros((ngroups, R * S), np.int64)
    for g in range(ngroups):
        q0 = g * MP
        for s in range(S):
            first = q0 * sw + s * dw - pl
            last = (q0 + MP - 1) * sw + s * dw - pl
            code = 1 if first < 0 else (2 if last >= W else 0)
            for r in range(R):
                codes[g, r * S + s] = code
    return codes


@njit(parallel=True, cache=True)
def conv2d_implicit_packed(xp, wp, b, y3, OW, sh, sw, dh, dw, R, S, act, res3, has_res, kblock,
                           rblock, kch, xp_ws, pt, H, pl, W):
    """The convolution as im2col_packed's channel-vectorized product with no column matrix
    (an implicit GEMM), groups == 1, every tap inside the micro-kernel's reduction: one
    zmm.gemm_tile_t_taps per 7-pixel group and channel chunk sums all R*S taps of
    kch channels in registers, so the tile is stored once per chunk (not once per
    tap and chunk) and the input is swept once per output-channel panel (the taps
    of an output row read R input rows, which stay in cache for the next groups):

        y3[n, k, p*OW + q] = act(b[k] + sum_(r, s) sum_c W[k, c, r, s] *
                                 xpad[n, c, p*sh + r*dh, q*sw + s*dw]  (+ res3[n, k, p*OW + q]))

    wp: zmm.pack_panels (width NR, chunk R*S*kch) of W arranged as (K, R*S*C) with
    columns in (channel chunk, tap, channel) order, so a panel's weights for one chunk
    are R*S*kc*NR consecutive floats (tap t's kc x NR block at t*kc*NR).  xp: the
    phase-split padded input; tasks (image, block of kblock output channels, block of
    rblock output rows: rows split only where channel blocks alone leave a thread idle);
    xp_ws (threads, >= R*S*kch*MP): a row's last group short of MP pixels, copied
    zero-padded tap by tap where reading its MP lanes in place would run past the input's
    end (in place elsewhere: the copy, once per row and panel, had 16x16 maps at 3x the
    time of 14x14 ones).  pt, H, pl, W: the input's top padding, height, left padding
    and width.  An output row whose first or last kernel rows read only padding runs
    without those taps (live_rows), and a whole group at a row's end skips the products
    of its first or last pixel in the taps where that pixel reads only padding
    (edge_codes): a 3x3 with padding 1 on a 7x7 map does 18 % fewer products, as direct
    kernels that skip padding do.
    """
    N, C, HP, WPF = xp.shape
    K = y3.shape[1]
    P = y3.shape[2]
    OH = P // OW
    plane = HP * WPF
    npg = (K + NR - 1) // NR
    nkb = (K + kblock - 1) // kblock
    nrb = (OH + rblock - 1) // rblock
    RS = R * S
    toff = _tap_offsets(R, S, dh, dw, sw, WPF)
    xf = xp.reshape(-1)
    wf = wp.reshape(-1)
    yf = y3.reshape(-1)
    rf = res3.reshape(-1)
    codes = edge_codes(OW // MP, R, S, sw, dw, pl, W)
    npf = min(rblock - 1, PF_GROUPS)
    for t in prange(N * nkb * nrb):
        n = t // (nkb * nrb)
        k0 = (t // nrb % nkb) * kblock
        k1 = min(K, k0 + kblock)
        p0 = (t % nrb) * rblock
        p1 = min(OH, p0 + rblock)
        scratch = xp_ws[numba.get_thread_id()]
        soff = np.empty(RS, np.int64)
        for r0 in range(k0, k1, NR):
            nr = min(NR, k1 - r0)
            for c0 in range(0, C, kch):
                kc = min(kch, C - c0)
                for tap in range(RS):
                    soff[tap] = tap * kc * MP
                wo = RS * c0 * npg * NR + (r0 // NR) * RS * kc * NR
                acc = 0 if c0 == 0 else 1
                fin = 1 if c0 + kc >= C else 0
                xbase = (n * C + c0) * plane
                # the task's next weight block (the next channel chunk, or the next panel's
                # first): rows 1 .. npf of this one prefetch it in equal slices, so its
                # first row does not wait on memory (512@7's 9.4 MB of weights come from
                # memory inside a model)
                nxt = -1
                span = 0
                if c0 + kc < C:
                    kn = min(kch, C - c0 - kc)
                    nxt = RS * (c0 + kc) * npg * NR + (r0 // NR) * RS * kn * NR
                    span = RS * kn * NR
                elif r0 + NR < k1:
                    nxt = (r0 // NR + 1) * RS * min(kch, C) * NR
                    span = RS * min(kch, C) * NR
                sl = (span + npf - 1) // max(npf, 1)
                for p in range(p0, p1):
                    xo = xbase + p * sh * WPF
                    yo = (n * K + r0) * P + p * OW
                    lo, hi = live_rows(p, sh, dh, pt, H, R)
                    t0 = lo * S
                    nt = (hi - lo) * S
                    wt = wo + t0 * kc * NR
                    pf = 0
                    pstep = NR
                    if nxt >= 0 and 1 <= p - p0 <= npf and nt > 0:
                        pf = nxt + (p - p0 - 1) * sl - wt
                        pstep = min(16, (sl + nt * kc - 1) // (nt * kc))
                    for q0 in range(0, OW, MP):
                        npx = min(MP, OW - q0)
                        if npx == MP and pf != 0:   # the row's first group prefetches
                            gemm_tile_t_taps_edges_pf(xf, xo + q0, plane, toff[t0:],
                                                      codes[q0 // MP, t0:], nt, wf, wt, kc, yf,
                                                      yo + q0, P, nr, MP, b, r0, act, rf,
                                                      has_res, acc, fin, pf, pstep)
                            pf = 0
                        elif npx == MP:
                            gemm_tile_t_taps_edges(xf, xo + q0, plane, toff[t0:],
                                                   codes[q0 // MP, t0:], nt, wf, wt, kc, yf,
                                                   yo + q0, P, nr, MP, b, r0, act, rf,
                                                   has_res, acc, fin)
                        else:
                            # a short last group reads its MP lanes in place, those past the
                            # row from the columns after it (their sums are never stored),
                            # unless that runs past the input's end: then a zero-padded copy
                            tmax = 0
                            for tap in range(nt):
                                tmax = max(tmax, toff[t0 + tap])
                            if xo + q0 + tmax + (kc - 1) * plane + MP <= xf.size:
                                gemm_tile_t_taps(xf, xo + q0, plane, toff[t0:], nt, wf, wt, kc,
                                                 yf, yo + q0, P, nr, npx, b, r0, act, rf,
                                                 has_res, acc, fin)
                                continue
                            for tap in range(nt):
                                _copy_padded(xf, xo + q0 + toff[t0 + tap], plane, kc, npx,
                                             scratch[tap * kc * MP:(tap + 1) * kc * MP], MP)
                            gemm_tile_t_taps(scratch, 0, MP, soff, nt, wf, wt, kc, yf, yo + q0,
                                             P, nr, npx, b, r0, act, rf, has_res, acc, fin)


@njit(parallel=True, cache=True)
def conv2d_implicit_pixels(xp, wp, b, y3, OW, sh, sw, dh, dw, R, S, groups, act, res3, has_res,
                           rblock):
    """The implicit GEMM with the pixel-vectorized tile (zmm.gemm_tile_taps: MR output
    channels x NR pixels of one output row, every (tap, channel) step inside its
    reduction, stored straight into y's rows): for convolutions with few input channels
    (stems) or few a group, where the channel-vectorized tile of conv2d_implicit_packed
    spends as long on its transposed store as on a reduction of R*S*C steps.

        y3[n, k, p*OW + q] = act(b[k] + sum_(r, s) sum_(c < Cg) W[k, c, r, s] *
                                 xpad[n, g*Cg + c, p*sh + r*dh, q*sw + s*dw]  (+ res3[n, k, p*OW + q]))

    with g = k // Kg (Cg = C/groups, Kg = K/groups).  wp: zmm.pack_panels (width MR, one
    chunk, ``groups`` groups) of W arranged as (K, R*S*Cg) with columns in (tap, channel)
    order: each group's rows in ceil(Kg/MR) panels of their own.  xp: the phase-split
    padded input.  Tasks: (image, block of rblock output rows); a task runs every
    channel panel over each output row, so the rows the taps read stay in L1.
    """
    N, C, HP, WPF = xp.shape
    K = y3.shape[1]
    P = y3.shape[2]
    OH = P // OW
    plane = HP * WPF
    Cg = C // groups
    Kg = K // groups
    ppg = (Kg + MR - 1) // MR
    nrb = (OH + rblock - 1) // rblock
    RS = R * S
    toff = _tap_offsets(R, S, dh, dw, sw, WPF)
    xf = xp.reshape(-1)
    wf = wp.reshape(-1)
    yf = y3.reshape(-1)
    rf = res3.reshape(-1)
    for t in prange(N * nrb):
        n = t // nrb
        p0 = (t % nrb) * rblock
        for p in range(p0, min(OH, p0 + rblock)):
            for pan in range(groups * ppg):
                g = pan // ppg
                k0 = g * Kg + (pan % ppg) * MR
                xo = (n * C + g * Cg) * plane + p * sh * WPF
                yo = (n * K + k0) * P + p * OW
                wo = pan * RS * Cg * MR
                nr = min(MR, (g + 1) * Kg - k0)
                for q0 in range(0, OW, NR):
                    if OW - q0 <= 16:  # a short last tile: half the vectors, no idle lanes
                        if Cg == 3:
                            gemm_tile_taps16_c3(xf, xo + q0, plane, toff, RS, wf, wo, Cg, yf,
                                                yo + q0, P, nr, OW - q0, b, k0, act, rf,
                                                has_res)
                        else:
                            gemm_tile_taps16(xf, xo + q0, plane, toff, RS, wf, wo, Cg, yf,
                                             yo + q0, P, nr, OW - q0, b, k0, act, rf, has_res)
                    elif Cg == 3:
                        gemm_tile_taps_c3(xf, xo + q0, plane, toff, RS, wf, wo, Cg, yf,
                                          yo + q0, P, nr, min(NR, OW - q0), b, k0, act, rf,
                                          has_res)
                    else:
                        gemm_tile_taps(xf, xo + q0, plane, toff, RS, wf, wo, Cg, yf, yo + q0,
                                       P, nr, min(NR, OW - q0), b, k0, act, rf, has_res)
