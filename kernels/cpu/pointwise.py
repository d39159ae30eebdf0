"""Pointwise (1x1) convolution: a straight GEMM per image and group.

    y[n, k, p, q] = act(b[k] + sum_c w[k, c] * x[n, g*Cg + c, p*sh, q*sw] (+ res[n, k, p, q]))

Stride 1: the input block x[n, g*Cg:(g+1)*Cg] viewed as (Cg, H*W) already is
the right-hand matrix.  A task (n, g, pixel tile, output-channel block) runs
SGEMM on its sub-blocks in place -- leading dimension H*W for the input tile
and for the output tile it writes straight into y -- then runs the epilogue on
that tile while it is hot.  No copy at all.

Stride > 1: BLAS cannot read a column-strided matrix, so each task first
gathers the subsampled pixels of its tile, (Cg, T), into its thread's
workspace (1/(sh*sw) of the input, no R*S blow-up), each row segment one vector
copy (tiles.gather_pixels_flat).  BLAS runs
single-threaded inside Numba's tasks (see fastconv/_runtime.py).

``pointwise_conv2d_packed`` does the same tasks with fastconv's own
register-blocked micro-kernel (zmm.py) on weights packed once into panels
instead of SGEMM: no per-call packing, no BLAS call overhead, and the thin
GEMMs of small maps (7x7: 49 pixels) keep their speed.

``pointwise_conv2d_to_blocked`` writes its output channel-blocked (NCHW16c) for a
depthwise layer that reads it in that layout (the expansion of an inverted
residual block): the channel-vectorized tile stores each pixel's 16 channels as
one vector, with no transpose.  ``pointwise_conv2d_from_blocked`` reads such an
input (the depthwise output, for the block's projection).
"""
import numba
import numpy as np
from numba import njit, prange

from . import FASTMATH
from .blas import sgemm_rm
from .epilogue import epilogue_tile
from .tiles import gather_pixels_flat, gemm_task, register_gemm_tile
from . import nchwc
from .zmm import (KC_T, MP, NR, PF_GROUPS, _copy_padded, gemm_block, gemm_block_t,
                  gemm_tile_t_blocked, gemm_tile_t_blocked_16, gemm_tile_t_blocked_pf,
                  gemm_tile_t_taps_c16_pf, row_sum)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_conv2d(x3, wmat, b, y3, groups, act, res3, has_res, tile, kblock, scal_ws):
    """Stride-1 1x1 conv: x3 (N, C, P), wmat (K, Cg), y3/res3 (N, K, P).

    tile: pixels per task; kblock: output channels per task; scal_ws: (threads, >= 2).
    """
    N, C, P = x3.shape
    K, Cg = wmat.shape
    Kg = K // groups
    ntiles = (P + tile - 1) // tile
    nkb = (Kg + kblock - 1) // kblock
    for t in prange(N * groups * ntiles * nkb):
        n, g, p0, T, k0, k1 = gemm_task(t, groups, ntiles, nkb, tile, kblock, P, Kg)
        sgemm_rm(k1 - k0, T, Cg, wmat, k0 * Cg, Cg, x3, (n * C + g * Cg) * P + p0, P,
                 y3, (n * K + k0) * P + p0, P, 0.0, scal_ws[numba.get_thread_id()])
        epilogue_tile(y3, n, k0, k1, p0, T, b, act, res3, has_res)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_conv2d_strided(x, wmat, b, y3, OW, sh, sw, groups, act, res3, has_res,
                             tile, kblock, cols_ws, scal_ws):
    """Strided 1x1 conv: x (N, C, H, W), wmat (K, Cg), y3/res3 (N, K, OH*OW).

    Tasks are (n, g, pixel tile, output-channel block), so a small output map
    (7x7) still spreads over the threads; each task gathers its tile's
    subsampled pixels (Cg x T, cheap for a 1x1) into its own workspace.
    cols_ws: (threads, >= Cg*tile); scal_ws: (threads, >= 2).
    """
    N = x.shape[0]
    K, Cg = wmat.shape
    P = y3.shape[2]
    Kg = K // groups
    ntiles = (P + tile - 1) // tile
    nkb = (Kg + kblock - 1) // kblock
    C, H, W = x.shape[1], x.shape[2], x.shape[3]
    xf = x.reshape(N * C * H * W)
    cf = cols_ws.reshape(cols_ws.size)
    for t in prange(N * groups * ntiles * nkb):
        n, g, p0, T, k0, k1 = gemm_task(t, groups, ntiles, nkb, tile, kblock, P, Kg)
        tid = numba.get_thread_id()
        cols = cols_ws[tid, :Cg * T]
        for c in range(Cg):
            gather_pixels_flat(xf, (n * C + g * Cg + c) * H * W, W, cf,
                               tid * cols_ws.shape[1] + c * T, p0, T, OW, sh, sw)
        sgemm_rm(k1 - k0, T, Cg, wmat, k0 * Cg, Cg, cols, 0, T, y3, (n * K + k0) * P + p0, P,
                 0.0, scal_ws[tid])
        epilogue_tile(y3, n, k0, k1, p0, T, b, act, res3, has_res)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_conv2d_register(x3, wmat, b, y3, groups, act, res3, has_res, tile, acc_ws):
    """Stride-1 1x1 conv without BLAS, for short reductions (small Cg): x3 (N, C, P),
    wmat (K, Cg), y3/res3 (N, K, P).

    A task is (n, g, pixel tile of T <= tile); register_gemm_tile does the
    rest, reading the input in place.  acc_ws: (threads, 4, >= tile) float32.
    """
    N, C, P = x3.shape
    K, Cg = wmat.shape
    Kg = K // groups
    ntiles = (P + tile - 1) // tile
    for t in prange(N * groups * ntiles):
        n, g, p0, T, _, _ = gemm_task(t, groups, ntiles, 1, tile, Kg, P, Kg)
        res2 = res3[n] if has_res else res3[0]
        register_gemm_tile(x3[n], g * Cg, p0, T, wmat, g * Kg, (g + 1) * Kg,
                           acc_ws[numba.get_thread_id()], y3[n], p0, b, act, res2, has_res)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def pointwise_conv2d_packed(x, wp, width, b, y3, OW, sh, sw, groups, act, res3, has_res, tile,
                            kblock, cols_ws, sc_ws, xp_ws, pooled, pool, prefetch):
    """1x1 conv of x (N, C, H, W) with packed weights into y3/res3 (N, K, OH*OW).

    pool: also the global average of every output plane into pooled (N, K) (the tile a
    whole plane, tile >= OH*OW), each task averaging the rows it has just stored.

    wp: zmm.pack_panels of the (K, Cg) weight, (groups, ceil(Kg/width)*Cg*width);
    width MR (chunk KC) runs zmm.gemm_block (vectors over pixels), width NR
    (chunk KC_T) zmm.gemm_block_t (vectors over channels, for small maps);
    kblock: output channels per task, a multiple of the width.  Stride 1 reads the
    input in place; a strided task first gathers its subsampled pixels
    (Cg x T, rows padded to 16 floats) into cols_ws (threads, >= Cg*ceil16(tile),
    only used when strided).
    sc_ws (threads, >= MR*NR), xp_ws (threads, >= KC*JB): micro-kernel scratch.
    prefetch: zmm.gemm_block's (0 for a strided conv, whose tiles are gathered copies).
    """
    N, C, H, W = x.shape
    K = y3.shape[1]
    P = y3.shape[2]
    Kg = K // groups
    Cg = C // groups
    npg = (Kg + width - 1) // width
    ntiles = (P + tile - 1) // tile
    nkb = (Kg + kblock - 1) // kblock
    xf = x.reshape(-1)
    yf = y3.reshape(-1)
    rf = res3.reshape(-1)
    wf = wp.reshape(-1)
    cf = cols_ws.reshape(-1)
    strided = sh != 1 or sw != 1
    for t in prange(N * groups * ntiles * nkb):
        n, g, p0, T, k0, k1 = gemm_task(t, groups, ntiles, nkb, tile, kblock, P, Kg)
        tid = numba.get_thread_id()
        w_base = g * npg * Cg * width
        pan0 = (k0 - g * Kg) // width
        src = xf
        s_off = (n * C + g * Cg) * H * W + p0
        lds = H * W
        if strided:
            lds = (T + 15) // 16 * 16
            src = cols_ws[tid, :Cg * lds]
            for c in range(Cg):
                gather_pixels_flat(xf, (n * C + g * Cg + c) * H * W, W, cf,
                                   tid * cols_ws.shape[1] + c * lds, p0, T, OW, sh, sw)
            s_off = 0
        # the epilogue (bias, residual, activation) is fused into the tiles' stores
        if width == NR:
            gemm_block_t(wf, w_base, npg, pan0, Cg, src, s_off, lds, T, yf, (n * K + k0) * P + p0, P,
                         k1 - k0, xp_ws[tid], b, k0, act, rf, has_res)
        else:
            gemm_block(wf, w_base, npg, pan0, Cg, src, s_off, lds, T, yf, (n * K + k0) * P + p0, P,
                       k1 - k0, sc_ws[tid], xp_ws[tid], b, k0, act, rf, has_res, prefetch)
        if pool:
            for k in range(k0, k1):
                pooled[n, k] = row_sum(yf, (n * K + k) * P, P) / np.float32(P)


@njit(parallel=True, cache=True)
def pointwise_conv2d_to_blocked(x, wp, b, yb, act, tile, kblock, xp_ws):
    """Stride-1 1x1 conv of x (N, C, H, W) into the channel-blocked yb (N, K/16, H*W*16):

        yb[n, k // 16, p*16 + k % 16] = act(b[k] + sum_c w[k, c] * x[n, c, p])

    K a multiple of 16.  wp: zmm.pack_panels of the (K, C) weight, width NR, chunk
    KC_T (as pointwise_conv2d_packed's channel-vectorized orientation); tasks are
    (image, pixel tile, block of kblock output channels, a multiple of NR); each
    7-pixel group is one zmm.gemm_tile_t_blocked per 32-channel panel and chunk, read
    in place (a group short of MP pixels is copied, zero-padded, into xp_ws first:
    threads x >= KC_T*MP).
    """
    N, C, H, W = x.shape
    P = H * W
    nb = yb.shape[1]
    K = nb * 16
    npg = (K + NR - 1) // NR
    ntiles = (P + tile - 1) // tile
    nkb = (K + kblock - 1) // kblock
    xf = x.reshape(-1)
    yf = yb.reshape(-1)
    wf = wp.reshape(-1)
    for t in prange(N * ntiles * nkb):
        n, g, p0, T, k0, k1 = gemm_task(t, 1, ntiles, nkb, tile, kblock, P, K)
        pixels_to_blocked(xf, n * C * P + p0, P, C, T, wf, npg, k0, k1, yf,
                          (n * nb * P + p0) * 16, P * 16, b, act, xp_ws[numba.get_thread_id()])


@njit(inline="always")
def pixels_to_blocked(xf, x_off, ldx, C, T, wf, npg, k0, k1, y, y_off, bstride, b, act, scratch,
                      pf=0, pstep=NR):
    """The 1x1 of T pixels, output channels k0 .. k1 (whole 32-channel panels but a last
    one), stored channel-blocked:

        y[y_off + (k // 16)*bstride + j*16 + k % 16]
            = act(b[k] + sum_c w[k, c] * xf[x_off + c*ldx + j])

    wf: zmm.pack_panels of the (K, C) weight (npg panels of NR, chunk KC_T).  Per chunk,
    panel and 7-pixel group one zmm.gemm_tile_t_blocked read in place (a last panel of
    16 channels on the 16-channel tile, gemm_tile_t_blocked_16); a group short of MP
    pixels is copied, zero-padded, into scratch (>= min(C, KC_T)*MP) first.  pf, pstep:
    with pf != 0, each 32-channel panel's first group (whole) prefetches pf floats on
    from the panel, pstep floats a step (zmm.gemm_tile_t_blocked_pf)."""
    for c0 in range(0, C, KC_T):
        kc = min(KC_T, C - c0)
        acc = 1 if c0 > 0 else 0
        fin = 1 if c0 + kc >= C else 0
        xo = x_off + c0 * ldx
        for r0 in range(k0, k1, NR):
            nr = min(NR, k1 - r0)
            wo = c0 * npg * NR + (r0 // NR) * kc * NR
            yo = y_off + (r0 // 16) * bstride
            for j0 in range(0, T, MP):
                npx = min(MP, T - j0)
                src, so, lds = xf, xo + j0, ldx
                if npx < MP:
                    _copy_padded(xf, xo + j0, ldx, kc, npx, scratch, MP)
                    src, so, lds = scratch, 0, MP
                if nr <= 16:  # a last panel of 16 channels
                    gemm_tile_t_blocked_16(src, so, lds, wf, wo, kc, y, yo + j0 * 16, bstride,
                                           nr, npx, b, r0, act, acc, fin)
                elif pf != 0 and j0 == 0 and npx == MP:
                    gemm_tile_t_blocked_pf(src, so, lds, wf, wo, kc, y, yo + j0 * 16, bstride,
                                           nr, npx, b, r0, act, acc, fin, pf, pstep)
                else:
                    gemm_tile_t_blocked(src, so, lds, wf, wo, kc, y, yo + j0 * 16, bstride,
                                        nr, npx, b, r0, act, acc, fin)


@njit(parallel=True, cache=True)
def pointwise_conv2d_from_blocked(xb, wp, b, y3, act, res3, has_res, tile, kblock, xp_ws):
    """Stride-1 1x1 conv of the channel-blocked xb (N, C/16, H*W*16) into y3 (N, K, H*W):

        y3[n, k, p] = act(b[k] + sum_c w[k, c] * xb[n, c // 16, p*16 + c % 16] (+ res3[n, k, p]))

    wp: zmm.pack_panels of the (K, C) weight, width NR, chunk C (one chunk: a panel's
    C x NR weights in channel order).  The work is units of one 32-channel panel x one
    7-pixel group, ordered (image, pixel tile of ``tile`` pixels -- a multiple of MP --,
    panel, group in the tile), and the N * ceil(P/tile) * ceil(K/kblock) tasks take
    equal runs of them: where kblock splits the panels evenly a task is exactly (image,
    pixel tile, block of kblock output channels); where it does not (160 channels: 5
    panels in 2 tasks) the tasks meet inside a panel instead of one doing 3 panels and
    the other 2.  A unit is one zmm.gemm_tile_t_taps_c16_pf with the channel blocks as
    its taps (16 steps each, pixels 16 floats apart), stored transposed into y3's
    channel rows with the epilogue; a tile's groups after the first prefetch the next
    panel's weights in slices (as zmm.gemm_block_t).  A group short of MP pixels is
    copied, zero-padded, into xp_ws (threads x >= C*MP) first.
    """
    N, nb, PV = xb.shape
    P = PV // 16
    K = y3.shape[1]
    C = nb * 16
    ntiles = (P + tile - 1) // tile
    nkb = (K + kblock - 1) // kblock
    npan = (K + NR - 1) // NR
    gpt = (tile + MP - 1) // MP  # groups per pixel tile (the last tile's may be fewer)
    units = N * ntiles * npan * gpt
    ntasks = N * ntiles * nkb
    npf = min(gpt - 1, PF_GROUPS)
    sl = (C * NR + npf - 1) // max(npf, 1)  # floats of the next panel a group prefetches
    pf_step = min(16, (sl + C - 1) // C)    # floats a step on (a line a step at most)
    toff = np.empty(nb, np.int64)
    soff = np.empty(nb, np.int64)
    for t in range(nb):
        toff[t] = t * PV
        soff[t] = t * MP * 16
    xf = xb.reshape(-1)
    yf = y3.reshape(-1)
    rf = res3.reshape(-1)
    wf = wp.reshape(-1)
    for t in prange(ntasks):
        scratch = xp_ws[numba.get_thread_id()]
        for u in range(t * units // ntasks, (t + 1) * units // ntasks):
            rest = u // gpt
            pan = rest % npan
            rest = rest // npan
            n = rest // ntiles
            j0 = (rest % ntiles) * tile + (u % gpt) * MP  # the group's first pixel
            if j0 >= P:
                continue
            npx = min(MP, P - j0)
            r0 = pan * NR
            nr = min(NR, K - r0)
            wo = pan * C * NR
            yo = (n * K + r0) * P + j0
            xo = (n * nb * P + j0) * 16
            # groups 1 .. npf of a tile prefetch the next panel in equal slices (as
            # zmm.gemm_block_t does): its first group would otherwise wait on memory
            grp = u % gpt
            pf = 0
            pstep = NR
            if pan + 1 < npan and 1 <= grp <= npf:
                pf = C * NR + (grp - 1) * sl
                pstep = pf_step
            if npx == MP:
                gemm_tile_t_taps_c16_pf(xf, xo, 1, toff, nb, wf, wo, 16, yf, yo, P, nr, MP, b,
                                        r0, act, rf, has_res, 0, 1, pf, pstep)
            else:
                for blk in range(nb):
                    for j in range(MP):
                        d = (blk * MP + j) * 16
                        if j < npx:
                            nchwc.copy_vector(xf, xo + blk * PV + j * 16, scratch, d)
                        else:
                            for c in range(16):
                                scratch[d + c] = 0.0
                gemm_tile_t_taps_c16_pf(scratch, 0, 1, soff, nb, wf, wo, 16, yf, yo, P, nr, npx,
                                        b, r0, act, rf, has_res, 0, 1, pf, pstep)
