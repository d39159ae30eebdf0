"""Tiling helpers shared by the GEMM-shaped families (im2col, pointwise).

A GEMM task is (image n, group g, pixel tile, output-channel block); pixel p
of the output grid (OH, OW) is the row-major index p = oh*OW + ow.
"""
from numba import njit

from .epilogue import ZERO, store_row, store_row_res
from .pad import copy_run, take_evens


@njit(inline="always")
def gemm_task(t, groups, ntiles, nkb, tile, kblock, P, Kg):
    """Decode task t into (n, g, p0, T, k0, k1): pixels [p0, p0+T), channels [k0, k1)."""
    kb = t % nkb
    rest = t // nkb
    ti = rest % ntiles
    rest = rest // ntiles
    g = rest % groups
    n = rest // groups
    p0 = ti * tile
    k0 = g * Kg + kb * kblock
    return n, g, p0, min(tile, P - p0), k0, min(k0 + kblock, (g + 1) * Kg)


@njit(inline="always")
def copy_strided(out, src, n, stride):
    """out[u] = src[u * stride] for u < n; strides 1 and 2 as their own loops (unit
    stride, or shuffles for the constant 2, vectorize; a run-time stride gathers)."""
    if stride == 1:
        for u in range(n):
            out[u] = src[u]
    elif stride == 2:
        for u in range(n):
            out[u] = src[2 * u]
    else:
        for u in range(n):
            out[u] = src[u * stride]


@njit(inline="always")
def gather_pixels(dst, plane, p0, T, OW, sh, sw, roff, coff):
    """dst[j] = plane[oh*sh + roff, ow*sw + coff] for the output pixels p0 + j, j < T.

    Runs row segment by row segment; slices are indexed by the bare loop
    variable, so Numba drops its wraparound check and LLVM vectorizes the copy
    (unit stride, or shuffles for the constant stride 2).
    """
    j = 0
    p = p0 // OW
    q = p0 % OW
    while j < T:
        seg = min(OW - q, T - j)
        out = dst[j:j + seg]
        copy_strided(out, plane[p * sh + roff, q * sw + coff:], seg, sw)
        j += seg
        p += 1
        q = 0


@njit(inline="always")
def gather_pixels_flat(xf, plane, W, dst, d_off, p0, T, OW, sh, sw):
    """dst[d_off + j] = xf[plane + oh*sh*W + ow*sw] for the output pixels p0 + j = oh*OW + ow,
    j < T (xf and dst flat C-contiguous float32; plane: the offset of the input plane,
    W its width): row segment by row segment, each one vector copy (copy_run at
    stride 1, take_evens at stride 2; a scalar loop otherwise).  gather_pixels' loops ran
    a 28- or 14-pixel segment in the scalar remainder of LLVM's vector loop."""
    j = 0
    p = p0 // OW
    q = p0 % OW
    while j < T:
        seg = min(OW - q, T - j)
        s = plane + p * sh * W + q * sw
        if sw == 1:
            copy_run(xf, s, dst, d_off + j, seg)
        elif sw == 2:
            take_evens(xf, s, dst, d_off + j, seg)
        else:
            for u in range(seg):
                dst[d_off + j + u] = xf[s + u * sw]
        j += seg
        p += 1
        q = 0


@njit(inline="always")
def register_gemm_tile(src, row0, s0, T, wmat, k_begin, k_end, acc, y2, p0, b, act, res2,
                       has_res):
    """y2[k, p0:p0+T] = act(b[k] + sum_c wmat[k, c] * src[row0 + c, s0:s0+T] (+ res2[k, p0:p0+T]))
    for k in [k_begin, k_end), c < wmat.shape[1].

    Four output channels at a time accumulate in acc (4, >= T), which stays in
    L1 while the reduction streams the source rows; then the epilogue writes y
    once.  For a short reduction this beats SGEMM, which spends its time
    packing and re-reading the output.  src and y2 are 2-D C-contiguous, so
    every row slice is unit-stride and the j loops vectorize.
    """
    Cg = wmat.shape[1]
    a0 = acc[0, :T]
    a1 = acc[1, :T]
    a2 = acc[2, :T]
    a3 = acc[3, :T]
    for k0 in range(k_begin, k_end, 4):
        nk = min(4, k_end - k0)
        for j in range(T):
            a0[j] = 0.0
            a1[j] = 0.0
            a2[j] = 0.0
            a3[j] = 0.0
        for c in range(Cg):
            xr = src[row0 + c, s0:s0 + T]
            w0 = wmat[k0, c]
            w1 = wmat[k0 + 1, c] if nk > 1 else ZERO  # float32 zeros: a float64 0.0
            w2 = wmat[k0 + 2, c] if nk > 2 else ZERO  # would turn the loop into
            w3 = wmat[k0 + 3, c] if nk > 3 else ZERO  # float64 arithmetic
            for j in range(T):
                v = xr[j]
                a0[j] += w0 * v
                a1[j] += w1 * v
                a2[j] += w2 * v
                a3[j] += w3 * v
        for kk in range(nk):
            k = k0 + kk
            row = y2[k, p0:p0 + T]
            if has_res:
                store_row_res(row, acc[kk, :T], b[k], res2[k, p0:p0 + T], act)
            else:
                store_row(row, acc[kk, :T], b[k], act)
