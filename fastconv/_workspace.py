"""Reusable scratch buffers, one set per Python thread.

Kernels get their workspaces as arguments; this module hands out buffers that
grow to the largest request and are then reused, so repeated calls of the same
shapes allocate nothing but their outputs.  Buffers are per Python thread, so
concurrent fastconv calls never share scratch memory.
"""
import threading

import numpy as np

_local = threading.local()


def get(name, shape, zero=False):
    """A float32 C-contiguous array of ``shape`` backed by the thread's ``name`` buffer."""
    size = 1
    for d in shape:
        size *= int(d)
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    buf = pool.get(name)
    if buf is None or buf.size < size:
        buf = pool[name] = np.empty(max(size, 1), np.float32)
    view = buf[:size].reshape(shape)
    if zero:
        view.fill(0.0)
    return view


def nbytes():
    """Bytes held by the calling thread's workspaces."""
    pool = getattr(_local, "pool", {})
    return sum(b.nbytes for b in pool.values())


def release():
    """Drop the calling thread's workspaces."""
    _local.pool = {}
