"""CPU kernels: one module per kernel family, each a set of ``@njit(parallel=True)``
functions over float32 C-contiguous arrays.  Every kernel takes its output
(and any workspace) as arguments, so the API layer owns all allocation."""

# fastmath without "nnan"/"ninf": reductions vectorize, NaN and Inf still propagate.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Epilogue activation codes shared by every kernel family.
ACT_NONE = 0
ACT_RELU = 1
ACT_RELU6 = 2
ACT_HARDSWISH = 3


def _cache_probe():
    """Never called: Numba's cache locator asks it where this directory's kernels are cached."""


def _drop_stale_cache(here, cache_dir):
    """Delete the Numba cache in cache_dir when any kernel source in ``here`` changed.

    Numba keys a cached kernel on its own file's timestamp only, but the
    kernels inline helpers and LLVM intrinsics from sibling modules
    (epilogue, tiles, zmm, nchwc, vnni): after an edit or upgrade of one of
    those, an unchanged kernel file would load stale machine code.  A digest
    of every source here is kept next to the cache; when it differs, the
    cached kernels are dropped and recompile on first use.
    """
    import glob
    import hashlib
    import os
    digest = hashlib.sha256()
    for path in sorted(glob.glob(os.path.join(here, "*.py"))):
        with open(path, "rb") as f:
            digest.update(os.path.basename(path).encode() + b"\0" + f.read())
    digest = digest.hexdigest()
    stamp = os.path.join(cache_dir, "fastconv-sources.sha256")
    try:
        with open(stamp) as f:
            if f.read().strip() == digest:
                return
    except OSError:
        pass
    try:
        os.makedirs(cache_dir, exist_ok=True)
        for path in glob.glob(os.path.join(cache_dir, "*.nbi")) + glob.glob(
                os.path.join(cache_dir, "*.nbc")):
            try:
                os.remove(path)
            except OSError:
                pass
        tmp = f"{stamp}.{os.getpid()}"
        with open(tmp, "w") as f:
            f.write(digest)
        os.replace(tmp, stamp)
    except OSError:
        pass


def _check_cache():
    import os
    try:
        from numba.core.caching import FunctionCache
        cache_dir = FunctionCache(_cache_probe)._cache_path
    except Exception:  # noqa: BLE001  (no usable cache location: nothing to drop)
        return
    _drop_stale_cache(os.path.dirname(os.path.abspath(__file__)), cache_dir)


_check_cache()
