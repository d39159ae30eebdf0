"""STREAM-style triad, for measuring the machine's memory bandwidth roof.

a[i] = b[i] + s * c[i]: two streams read, one written (12 bytes per element
for float32), split over the threads in contiguous chunks.
"""
from numba import njit, prange

from . import FASTMATH


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def triad(a, b, c, s, chunks):
    """a = b + s * c over 1-D float32 arrays, in ``chunks`` parallel pieces."""
    n = a.shape[0]
    step = (n + chunks - 1) // chunks
    for t in prange(chunks):
        lo = t * step
        hi = min(n, lo + step)
        for i in range(lo, hi):
            a[i] = b[i] + s * c[i]
