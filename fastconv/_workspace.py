"""Reusable scratch buffers, one set per Python thread.

Kernels get their workspaces as arguments; this module hands out buffers that
grow to the largest request and are then reused, so repeated calls of the same
shapes allocate nothing but their outputs.  Buffers are per Python thread, so
concurrent fastconv calls never share scratch memory.
"""
import threading

import numpy as np

from . import _memory

_local = threading.local()
_ZEROS = {}
_generation = 0  # bumped whenever a buffer is replaced by a larger one


def zeros(k):
    """k float32 zeros shared by every caller (bias-free layers, epilogues that add no
    bias); kernels only read them.  Kept writable: a read-only array is a different
    Numba type, i.e. a recompile."""
    z = _ZEROS.get(k)
    if z is None:
        z = _ZEROS[k] = np.zeros(k, np.float32)
    return z


def get(name, shape):
    """A float32 C-contiguous array of ``shape`` backed by the thread's ``name`` buffer.

    Views are remembered per (name, shape), so a repeated request is one dict
    lookup; growing any buffer forgets them (they would keep the old one alive).
    """
    views = _views()
    key = (name, shape)
    view = views.get(key)
    if view is not None:
        return view
    size = 1
    for d in shape:
        size *= int(d)
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    buf = pool.get(name)
    if buf is None or buf.size < size:
        global _generation
        buf = pool[name] = _aligned(max(size, 1))
        views.clear()
        _generation += 1
    view = views[key] = buf[:size].reshape(shape)
    return view


def cached(fetch):
    """A function returning ``fetch()`` (a bound call's workspaces, got through get and
    per_thread) that runs fetch again only on a Python thread that has not yet, or once
    any buffer has grown since (its old views would keep the old buffer): a planned call
    then looks its workspaces up with one attribute read instead of a dict lookup each.
    (Pools are per thread, so a view cached on one thread is never another thread's
    buffer; a view of a buffer since replaced still points at memory only such views
    use, so even a missed generation bump could not make two calls share scratch.)"""
    local = threading.local()

    def views():
        c = getattr(local, "c", None)
        if c is None or c[0] != _generation:
            c = local.c = (_generation, fetch())
        return c[1]
    return views


def _views():
    views = getattr(_local, "views", None)
    if views is None or len(views) > 512:
        views = _local.views = {}
    return views


def _aligned(size):
    """size float32s starting on a 64-byte boundary (a cache line, one zmm vector):
    row blocks that are multiples of 16 floats then never split a vector load
    across two lines; on huge pages where large (_memory)."""
    return _memory.empty(size, np.float32)


def per_thread(name, threads, shape):
    """A (threads,) + shape buffer whose per-thread blocks never share a cache line.

    The last axis is rounded up to 16 floats and 16 more are added, so two
    threads writing their own blocks never write the same 64-byte line (false
    sharing measurably slowed the depthwise kernel on small planes).  Kernels
    use the leading part of each row.
    """
    views = _views()
    key = (name, threads, shape)
    view = views.get(key)
    if view is None:
        shape = tuple(int(d) for d in shape)
        last = -(-max(shape[-1], 1) // 16) * 16 + 16
        view = get(name, (threads,) + shape[:-1] + (last,))
        views[key] = view
    return view
