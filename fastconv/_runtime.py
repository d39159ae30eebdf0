"""Process-wide runtime state: the Numba threading layer, thread counts, BLAS.

fastconv keeps exactly one thread pool busy at a time.  Numba's pool owns the
cores; the BLAS that Numba calls for ``np.dot`` inside kernels (SciPy's) is
pinned to one thread for the duration of every fastconv call, so a kernel's
prange tiles each run a single-threaded SGEMM and no BLAS worker ever spins
against a Numba worker.  ``set_num_threads`` sets the size of Numba's pool for
fastconv calls from every Python thread (Numba's own setting is per thread).

The threading layer is TBB where available: it is safe when several Python
threads enter parallel kernels at once and in children forked after a parallel
kernel ran, where workqueue aborts and GNU OpenMP kills the child.
"""
import ctypes
import glob
import os
import sys
import threading
import warnings

import numba

_lock = threading.Lock()
_num_threads = None           # None: all of Numba's threads
_layer_checked = False
_serialize = threading.Lock()  # only used when the layer is not thread-safe
_serial_layer = False


def _load_tbb():
    """Make libtbb visible to Numba before its first parallel call.

    The PyPI ``tbb`` wheel puts libtbb.so.12 in ``sys.prefix/lib``, which the
    dynamic loader does not search inside a virtual environment; loading it
    with RTLD_GLOBAL first lets Numba's tbbpool extension resolve it.
    """
    chosen = os.environ.get("NUMBA_THREADING_LAYER", "").strip().lower()
    if chosen not in ("", "tbb", "default", "safe", "threadsafe"):
        return  # the user chose a layer other than TBB; respect it
    candidates = []
    for prefix in {sys.prefix, sys.base_prefix, getattr(sys, "exec_prefix", sys.prefix)}:
        candidates += sorted(glob.glob(os.path.join(prefix, "lib", "libtbb.so.12*")))
    for path in candidates:
        try:
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            break
        except OSError:
            continue
    try:
        from numba.np.ufunc import tbbpool  # noqa: F401  (raises if TBB is unusable)
    except Exception:
        return
    if not chosen:
        # Only possible before Numba launched a layer; afterwards the layer is fixed.
        numba.config.THREADING_LAYER = "tbb"


_load_tbb()


def threading_layer():
    """The Numba threading layer in use (launches it if needed)."""
    _ensure_layer()
    return numba.threading_layer()


def _ensure_layer():
    global _layer_checked
    if _layer_checked:
        return
    with _lock:
        if _layer_checked:
            return
        numba.set_num_threads(numba.get_num_threads())  # launches the layer
        from .kernels.cpu import blas
        blas.selftest()  # binds SciPy's SGEMM on this thread before any parallel kernel uses it
        layer = numba.threading_layer()
        global _serial_layer
        _serial_layer = layer != "tbb"
        if layer != "tbb":
            warnings.warn(
                f"fastconv: Numba threading layer is {layer!r}, not 'tbb'; fastconv "
                "serializes its kernel calls across Python threads "
                "(install the 'tbb' package for concurrent calls)",
                RuntimeWarning, stacklevel=3)
        _layer_checked = True


def max_threads():
    """The most threads fastconv may use: Numba's pool size (NUMBA_NUM_THREADS)."""
    return numba.config.NUMBA_NUM_THREADS


def set_num_threads(n):
    """Use ``n`` threads for every fastconv call, from any Python thread, BLAS included.

    BLAS inside fastconv kernels always runs single-threaded under Numba's tiles,
    so ``n`` is the number of busy cores during a call.
    """
    global _num_threads
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise TypeError(f"set_num_threads: expected an int, got {type(n).__name__}")
    n = n.__index__()
    if not 1 <= n <= max_threads():
        raise ValueError(f"set_num_threads: expected 1 <= n <= {max_threads()} "
                         f"(NUMBA_NUM_THREADS), got {n}")
    _num_threads = n


def get_num_threads():
    """Threads fastconv calls use."""
    return max_threads() if _num_threads is None else _num_threads


class _BlasPin:
    """Pins the kernel BLAS to one thread while any fastconv call runs.

    Reference-counted across Python threads: the first caller in saves the
    library's setting and sets 1, the last one out restores it.  OpenBLAS is
    driven through its own ``openblas_{get,set}_num_threads`` symbols: going
    through threadpoolctl's controller would be slower and, for OpenBLAS, is
    silently ignored when called from any Python thread other than the first
    one that used it.
    """

    def __init__(self):
        self._libs = None
        self._funcs = None
        self._depth = 0
        self._saved = []
        self._mutex = threading.Lock()

    def libraries(self):
        """threadpoolctl controllers of the BLAS behind Numba's np.dot (SciPy's)."""
        if self._libs is None:
            import scipy.linalg.cython_blas  # noqa: F401  (the BLAS Numba's np.dot calls)
            from threadpoolctl import ThreadpoolController
            blas = [lib for lib in ThreadpoolController().lib_controllers
                    if lib.user_api == "blas"]
            scipy_blas = [lib for lib in blas if "scipy" in os.path.basename(
                os.path.dirname(lib.filepath)) and "numpy" not in lib.filepath]
            self._libs = scipy_blas or blas
        return self._libs

    def functions(self):
        """(get, set) callables per library: raw symbols where possible."""
        if self._funcs is None:
            funcs = []
            for lib in self.libraries():
                getter = setter = None
                if lib.internal_api == "openblas" and getattr(lib, "threading_layer", "") != "openmp":
                    getter = lib._get_symbol("openblas_get_num_threads")
                    setter = lib._get_symbol("openblas_set_num_threads")
                    if setter is not None:
                        setter.argtypes = [ctypes.c_int]
                        setter.restype = None
                if getter is None or setter is None:
                    getter = lib.get_num_threads
                    setter = getattr(lib, "_real_set_num_threads", lib.set_num_threads)
                funcs.append((getter, setter))
            self._funcs = funcs
        return self._funcs

    def current(self):
        """The thread counts the BLAS libraries report now."""
        return [get() for get, _ in self.functions()]

    def __enter__(self):
        with self._mutex:
            if self._depth == 0:
                funcs = self.functions()
                self._saved = [get() for get, _ in funcs]
                for (_, set_threads), saved in zip(funcs, self._saved):
                    if saved != 1:
                        set_threads(1)
            self._depth += 1

    def __exit__(self, *exc):
        with self._mutex:
            self._depth -= 1
            if self._depth == 0:
                for (_, set_threads), saved in zip(self._funcs, self._saved):
                    if saved is not None and saved != 1:
                        set_threads(saved)


blas_pin = _BlasPin()


_thread_state = threading.local()


class kernel_scope:
    """Context for one kernel call: thread count applied, BLAS pinned, layer checked.

    ``blas=False`` for kernels that make no BLAS call (no pinning needed).
    Numba's thread count is per Python thread; the last value set on this
    thread is remembered so the common case costs no call into Numba.
    """

    __slots__ = ("_blas", "_ser")

    def __init__(self, blas=True):
        self._blas = blas
        self._ser = False

    def __enter__(self):
        if not _layer_checked:
            _ensure_layer()
        n = _num_threads if _num_threads is not None else numba.config.NUMBA_NUM_THREADS
        if getattr(_thread_state, "n", None) != n:
            numba.set_num_threads(n)
            _thread_state.n = n
        if self._blas:
            blas_pin.__enter__()
        if _serial_layer:
            _serialize.acquire()
            self._ser = True
        return self

    def __exit__(self, *exc):
        if self._ser:
            _serialize.release()
            self._ser = False
        if self._blas:
            blas_pin.__exit__(*exc)
        return False


def blas_info():
    """Description of the BLAS that fastconv's kernels call."""
    return [{"filepath": lib.filepath, "internal_api": lib.internal_api,
             "version": lib.version, "num_threads": lib.get_num_threads(),
             "architecture": getattr(lib, "architecture", None)}
            for lib in blas_pin.libraries()]


# -- recorded kernel launches (a model plan's replay) ------------------------------------------
#
# A bound call (Algorithm.bind) that does nothing between its kernels that a later call
# depends on launches them through ``launch``.  A model's plan captures one run of such
# calls on its own buffers and afterwards replays the recorded kernels and arguments
# (the same objects, so the same memory) back to back: no Python between the kernels
# but a loop, which in a model costs far more than its warm few microseconds once the
# kernels have evicted the interpreter's code and data from the caches.

_recording = threading.local()


def launch(kernel, *args):
    """``kernel(*args)``, appended as (kernel, args) to this thread's open capture if there
    is one.  Positional arguments only."""
    cap = getattr(_recording, "capture", None)
    if cap is not None:
        cap.launches.append((kernel, args))
    kernel(*args)


def unrecordable():
    """Mark this thread's open capture (if any) incomplete: the work just done was not all
    launches (a call that planned or converted something, a NumPy step), so its
    launches cannot stand for it."""
    cap = getattr(_recording, "capture", None)
    if cap is not None:
        cap.complete = False


class capture:
    """``with capture() as cap:`` every ``launch`` this thread makes inside is appended to
    ``cap.launches``; ``cap.complete`` stays True unless ``unrecordable`` was called.  An
    enclosing capture gets both on exit."""

    __slots__ = ("launches", "complete", "_outer")

    def __enter__(self):
        self._outer = getattr(_recording, "capture", None)
        self.launches = []
        self.complete = True
        _recording.capture = self
        return self

    def __exit__(self, *exc):
        _recording.capture = outer = self._outer
        if outer is not None:
            outer.launches.extend(self.launches)
            outer.complete = outer.complete and self.complete
        return False


def replay(launches):
    """Run recorded (kernel, args) pairs in order (inside a kernel_scope); an open capture
    records them as launched."""
    cap = getattr(_recording, "capture", None)
    if cap is not None:
        cap.launches.extend(launches)
    for kernel, args in launches:
        kernel(*args)


class Records:
    """One record per Python thread, kept on the object that replays it (a model), so
    that it goes with the object; copies and pickles of the object start empty (the
    launches name this process's buffers)."""

    __slots__ = ("_by_thread",)

    def __init__(self):
        self._by_thread = {}

    def get(self):
        return self._by_thread.get(threading.get_ident())

    def set(self, rec):
        if len(self._by_thread) > 64:  # threads come and go
            self._by_thread.clear()
        self._by_thread[threading.get_ident()] = rec

    def __reduce__(self):
        return (Records, ())

    def __deepcopy__(self, memo):
        return Records()
