"""Buffers on huge pages (fastconv/_memory.py): the arrays NumPy would give, never shared."""
import gc
import mmap
import sys
import weakref

import numba
import numpy as np
import pytest

from fastconv import _memory, _workspace

HUGE = sys.platform.startswith("linux") and hasattr(mmap, "MADV_HUGEPAGE")


def _owner(a):
    """What finally holds a's memory: an mmap (a huge-page region) or a NumPy array."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    return a.obj if isinstance(a, memoryview) else a


@pytest.mark.parametrize("shape, dtype", [((3, 5), np.float32), ((0, 7), np.float32),
                                          (100_000, np.int8), ((300, 1000), np.float32),
                                          ((64, 1024, 5), np.int32), (11 << 20, np.float32)])
def test_empty_is_what_numpy_gives(shape, dtype):
    a = _memory.empty(shape, dtype)
    want = np.empty(shape, dtype)
    assert a.shape == want.shape and a.dtype == want.dtype
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.aligned
    assert a.size == 0 or a.ctypes.data % 64 == 0
    assert numba.typeof(a) == numba.typeof(want)  # the kernels' types: no recompiles
    a[...] = 3
    assert (a == 3).all()
    z = _memory.zeros(shape, dtype)
    assert z.shape == want.shape and not z.any()


@pytest.mark.skipif(not HUGE, reason="huge pages are a Linux feature")
def test_large_buffers_come_from_regions_small_ones_from_numpy(monkeypatch):
    big = _memory.empty((300, 1000))                     # 1.2 MB: carved from a region
    assert isinstance(_owner(big), mmap.mmap)
    assert big.ctypes.data % 64 == 0
    huge = _memory.empty(_memory.REGION)                  # > half a region: a region of its own
    assert isinstance(_owner(huge), mmap.mmap) and _owner(huge) is not _owner(big)
    assert huge.ctypes.data % _memory.HUGE_PAGE == 0
    small = _memory.empty(100)
    assert isinstance(_owner(small), np.ndarray)
    monkeypatch.setenv("FASTCONV_HUGE_PAGES", "0")        # switched off: plain NumPy
    assert not _memory.enabled()
    assert isinstance(_owner(_memory.empty((300, 1000))), np.ndarray)


def test_live_buffers_never_overlap(rng):
    arrays = []
    for it in range(60):
        n = int(rng.integers(1, 3 << 20))
        a = _memory.empty(n, np.uint8)
        a[:] = it % 251
        arrays.append((a, it % 251))
        if it % 3 == 0:
            arrays.pop(int(rng.integers(0, len(arrays))))  # some die; the rest stay
    for i, (a, v) in enumerate(arrays):
        assert (a == v).all()
        for b, _ in arrays[i + 1:]:
            assert not np.shares_memory(a, b)


@pytest.mark.skipif(not HUGE, reason="huge pages are a Linux feature")
def test_a_region_is_unmapped_once_nothing_uses_it():
    a = _memory.empty(_memory.REGION)  # a region of its own
    region = weakref.ref(_owner(a))
    view = a[10:20]
    del a
    gc.collect()
    assert region() is not None and view.size == 10  # a view still holds it
    del view
    gc.collect()
    assert region() is None


def test_workspaces_and_packed_weights_use_it(rng):
    import fastconv as fc
    ws = _workspace.get("test_memory_ws", (512, 1024))
    assert ws.flags.c_contiguous and ws.ctypes.data % 64 == 0
    x = rng.standard_normal((1, 256, 14, 14)).astype(np.float32)
    w = rng.standard_normal((256, 256, 1, 1)).astype(np.float32)
    packed = {}
    y = fc.conv2d(x, w, packed=packed)
    np.testing.assert_allclose(y, fc.conv2d(x, w, algo="direct"), rtol=1e-4, atol=1e-3)
    arrays = [v for v in packed.values() if isinstance(v, np.ndarray) and v.nbytes >= 1 << 18]
    assert arrays, packed.keys()  # the packed 1x1 weights (256 KB)
    if HUGE:
        assert isinstance(_owner(ws), mmap.mmap)
        assert all(isinstance(_owner(v), mmap.mmap) for v in arrays)
