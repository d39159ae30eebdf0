"""Kernels that measure the machine rather than compute a layer.

``triad``: the STREAM triad, for the memory bandwidth roof.  a[i] = b[i] + s * c[i]:
two streams read, one written (12 bytes per element for float32), split over the
threads in contiguous chunks.

``write_blocks`` / ``read_blocks``: the cross-thread handoff.  Each thread writes its own
block, then each reads its own block or the next thread's, just written: how much
slower the second is says whether the threads share their caches right now (on a
shared VM the host may place the vCPUs where a line one wrote reaches the other at
memory speed; kernels whose launches hand data between threads then lose their
parallel speedup).
"""
import numba
import numpy as np
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


@njit(parallel=True, fastmath=True, cache=True)
def write_blocks(buf, v):
    """buf[t, i] = v + i for the block t of the thread running each task (buf (threads, n):
    one task per thread; under work stealing a thread may run two and write its block
    twice, which only leaves the other block as it was)."""
    for _ in prange(buf.shape[0]):
        b = buf[numba.get_thread_id()]
        for i in range(b.size):
            b[i] = v + i


@njit(parallel=True, fastmath=True, cache=True)
def read_blocks(buf, shift, out):
    """out[t] = sum_i buf[(t + shift) % threads, i] for the thread t running each task:
    shift 0 its own block, 1 the next thread's."""
    for _ in prange(buf.shape[0]):
        tid = numba.get_thread_id()
        b = buf[(tid + shift) % buf.shape[0]]
        s = np.float32(0.0)
        for i in range(b.size):
            s += b[i]
        out[tid] = s
