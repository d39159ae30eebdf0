"""Buffers that every call reads, on transparent huge pages.

Packed weights, workspaces and a model's planned activations are read on every
inference: MobileNetV2 streams ~14 MB of them, ResNet-50 ~100 MB, from L3 or
memory.  With 4 KiB pages that is a TLB miss every 64 cache lines, and on a
virtual machine every miss walks two page tables (the guest's and the host's).
Backed by 2 MiB pages the same streams miss the TLB 512 times less often:
MobileNetV2 on one thread ran 7.3-7.6 ms instead of 7.9-8.7 (medians of three
alternating process pairs; docs/performance.md).

``empty(shape, dtype)`` returns a C-contiguous, 64-byte aligned, writable array
(the same Numba type as ``np.empty``'s) carved from a region of 2 MiB-aligned
anonymous memory that the kernel is asked to back with huge pages
(``madvise(MADV_HUGEPAGE)``; Linux's default "madvise" mode honours exactly
that).  Regions are carved front to back and never reused, so two live arrays
never share memory; a region is unmapped once no array carved from it is
referenced any more (each array keeps its region alive).  Requests under
``MIN_BYTES``, systems without ``MADV_HUGEPAGE``, and ``FASTCONV_HUGE_PAGES=0``
in the environment get plain (64-byte aligned) NumPy arrays.
"""
import mmap
import os
import threading

import numpy as np

HUGE_PAGE = 2 << 20
REGION = 32 << 20       # bytes carved per region; larger requests get a region of their own
MIN_BYTES = 64 << 10    # smaller arrays span few pages: plain NumPy

_lock = threading.Lock()
_current = [None, 0]    # the region being carved (a uint8 array) and its next free byte


def enabled():
    """Whether large buffers go on huge pages here (see the module docstring)."""
    return (hasattr(mmap, "MADV_HUGEPAGE") and hasattr(mmap, "MAP_ANONYMOUS")
            and os.environ.get("FASTCONV_HUGE_PAGES", "1").strip() != "0")


def _region(size):
    """size bytes (a multiple of HUGE_PAGE) of anonymous memory starting on a huge-page
    boundary, advised to be backed by huge pages, as a uint8 array (its base keeps the
    mapping alive); None where the mapping fails."""
    try:
        mm = mmap.mmap(-1, size + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    except (OSError, ValueError):
        return None
    raw = np.frombuffer(mm, np.uint8)
    skip = -raw.ctypes.data % HUGE_PAGE  # a multiple of the 4 KiB page: mmap is page aligned
    try:
        mm.madvise(mmap.MADV_HUGEPAGE, skip, size)
    except (OSError, ValueError):
        pass  # still correct memory, on small pages
    return raw[skip:skip + size]


def _plain(nbytes):
    raw = np.empty(nbytes + 64, np.uint8)
    skip = -raw.ctypes.data % 64
    return raw[skip:skip + nbytes]


def empty(shape, dtype=np.float32):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype``, 64-byte aligned,
    on huge pages where it is large enough (module docstring)."""
    shape = (int(shape),) if np.ndim(shape) == 0 else tuple(int(d) for d in shape)
    dt = np.dtype(dtype)
    nbytes = dt.itemsize
    for d in shape:
        nbytes *= d
    buf = None
    if nbytes >= MIN_BYTES and enabled():
        with _lock:
            region, off = _current
            off = -(-off // 64) * 64
            if nbytes > REGION // 2:
                region, off = _region(-(-nbytes // HUGE_PAGE) * HUGE_PAGE), 0
            elif region is None or off + nbytes > region.size:
                region, off = _region(REGION), 0
                _current[:] = [region, off]
            if region is not None:
                buf = region[off:off + nbytes]
                if region is _current[0]:
                    _current[1] = off + nbytes
    if buf is None:
        buf = _plain(nbytes)
    return buf.view(dt).reshape(shape)


def zeros(shape, dtype=np.float32):
    """``empty`` filled with zeros."""
    a = empty(shape, dtype)
    a.fill(0)
    return a
