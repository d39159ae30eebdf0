"""Tiling helpers shared by the SGEMM-based families (im2col, pointwise).

A GEMM task is (image n, group g, pixel tile, output-channel block); pixel p
of the output grid (OH, OW) is the row-major index p = oh*OW + ow.
"""
from numba import njit


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
        src = plane[p * sh + roff, q * sw + coff:]
        if sw == 1:
            for u in range(seg):
                out[u] = src[u]
        elif sw == 2:
            for u in range(seg):
                out[u] = src[2 * u]
        else:
            for u in range(seg):
                out[u] = src[u * sw]
        j += seg
        p += 1
        q = 0
