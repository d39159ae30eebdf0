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
