"""Zero padding of an NCHW tensor into a caller-owned buffer."""
from numba import njit, prange


@njit(parallel=True, cache=True)
def pad_nchw(x, xp, pad_top, pad_left):
    """xp[n, c, pad_top + i, pad_left + j] = x[n, c, i, j]; every other element of xp = 0.

    x: (N, C, H, W); xp: (N, C, H + pad_top + pad_bottom, W + pad_left + pad_right).
    """
    N, C, H, W = x.shape
    HP, WP = xp.shape[2], xp.shape[3]
    for t in prange(N * C):
        n = t // C
        c = t % C
        for i in range(HP):
            row = xp[n, c, i]
            src = i - pad_top
            if src < 0 or src >= H:
                for j in range(WP):
                    row[j] = 0.0
            else:
                xrow = x[n, c, src]
                inner = row[pad_left:pad_left + W]  # bare loop index: vectorized copy
                for j in range(W):
                    inner[j] = xrow[j]
                for j in range(pad_left):
                    row[j] = 0.0
                tail = row[pad_left + W:]
                for j in range(WP - pad_left - W):
                    tail[j] = 0.0


@njit(parallel=True, cache=True)
def pad_nchw_phased(x, xp, pad_top, pad_left, sw):
    """Zero padding with each row split into its sw column phases:

        xp[n, c, i, ph*WS + j] = xpad[n, c, i, j*sw + ph]    (ph < sw, j < WS)

    where xpad is x zero-padded (pad_top rows above, pad_left columns on the left)
    and WS = xp.shape[3] // sw; positions past the padded width are zero.  A
    stride-sw gather q*sw + s from xpad is then the unit-stride run starting at
    (s % sw)*WS + s // sw (how the strided im2col reads it).
    """
    N, C, H, W = x.shape
    HP = xp.shape[2]
    WS = xp.shape[3] // sw
    for t in prange(N * C):
        n = t // C
        c = t % C
        for i in range(HP):
            row = xp[n, c, i]
            for j in range(row.shape[0]):
                row[j] = 0.0
            src = i - pad_top
            if src < 0 or src >= H:
                continue
            xrow = x[n, c, src]
            for ph in range(sw):
                # phase ph holds padded columns j*sw + ph, i.e. input columns
                # j*sw + ph - pad_left, valid for j in [jlo, jhi)
                jlo = max(0, -((ph - pad_left) // sw))
                jhi = min(WS, (W - 1 - ph + pad_left) // sw + 1)
                if jhi <= jlo:
                    continue
                dst = row[ph * WS + jlo:ph * WS + jhi]
                first = jlo * sw + ph - pad_left
                if sw == 2:
                    src2 = xrow[first:]
                    for u in range(jhi - jlo):
                        dst[u] = src2[2 * u]
                else:
                    for u in range(jhi - jlo):
                        dst[u] = xrow[first + u * sw]


@njit(parallel=True, cache=True)
def pad_space_to_depth(x, xs, pad_top, pad_left, sh, sw):
    """Zero padding with rows and columns split into their sh x sw stride phases:

        xs[n, (c*sh + pr)*sw + pc, i, j] = xpad[n, c, i*sh + pr, j*sw + pc]

    (pr < sh, pc < sw, i < HS, j < WS; positions past the padded input are zero).
    A stride-(sh, sw) conv's tap (r, s) then reads, for output pixels (p, q), the
    unit-stride plane of phase (r % sh, s % sw) at (p + r // sh, q + s // sw): a
    stride-1 access on a grid of WS columns (how the sparse kernel tiles it).
    """
    N, C, H, W = x.shape
    HS, WS = xs.shape[2], xs.shape[3]
    for t in prange(N * C * sh):
        n = t // (C * sh)
        c = (t // sh) % C
        pr = t % sh
        for pc in range(sw):
            plane = xs[n, (c * sh + pr) * sw + pc]
            jlo = max(0, -((pc - pad_left) // sw))
            jhi = min(WS, (W - 1 - pc + pad_left) // sw + 1)
            for i in range(HS):
                row = plane[i]
                for j in range(WS):
                    row[j] = 0.0
                src = i * sh + pr - pad_top
                if src < 0 or src >= H or jhi <= jlo:
                    continue
                xrow = x[n, c, src]
                first = jlo * sw + pc - pad_left
                for u in range(jhi - jlo):
                    row[jlo + u] = xrow[first + u * sw]
