"""Backend selection: "cpu", "cuda" or "auto", globally (``set_backend``) or per call.

GPU detection is lazy (fastconv/_cuda.py): nothing imports numba.cuda until a
decision needs it.  The default is "auto" without probing: calls on device
arrays (numba, CuPy, torch CUDA: anything with ``__cuda_array_interface__``)
run on the GPU, NumPy calls on the CPU.  ``set_backend("auto")`` or
``backend="auto"`` also lets a NumPy call move to the GPU when its modelled
time there, transfers included, is lower; if no GPU is usable then, fastconv
warns once and stays on the CPU.  "cuda" without a usable GPU is an error.
"""
import warnings

_BACKENDS = ("auto", "cpu", "cuda")
_backend = "auto"
_probe = False  # whether "auto" may look for a GPU for NumPy inputs
_warned = [False]


def set_backend(name):
    """Choose "cpu", "cuda" or "auto" for every later call ("cuda" needs a usable GPU)."""
    global _backend, _probe
    if name not in _BACKENDS:
        raise ValueError(f"set_backend: expected one of {list(_BACKENDS)}, got {name!r}")
    if name == "cuda":
        from . import _cuda
        ok, why = _cuda.status()
        if not ok:
            raise ValueError(f"set_backend: the 'cuda' backend is not available: {why}")
    _backend = name
    _probe = name == "auto"


def get_backend():
    """The global setting: "auto", "cpu" or "cuda"."""
    return _backend


def resolve(name, caller):
    """Check a ``backend=`` argument: returns it, or raises a clear error."""
    if name not in _BACKENDS:
        raise ValueError(f"{caller}: backend must be one of {list(_BACKENDS)}, got {name!r}")
    if name == "cuda":
        from . import _cuda
        ok, why = _cuda.status()
        if not ok:
            raise ValueError(f"{caller}: the 'cuda' backend is not available: {why}")
    return name


def may_use_gpu(x):
    """False (cheaply) when a call without ``backend=`` certainly runs on the CPU."""
    if _backend == "cpu":
        return False
    if _backend == "cuda" or _probe:
        return True
    return hasattr(x, "__cuda_array_interface__") or type(x).__name__ == "FakeCUDAArray"


def choose(backend, x, layer):
    """"cpu", "cuda" or "maybe" (auto with probing: decide from the modelled costs)."""
    from . import _cuda
    name = _backend if backend is None else resolve(backend, layer)
    device = _cuda.is_device_array(x)
    if name == "cpu":
        if device:
            raise ValueError(f"{layer}: the input is a GPU array but the backend is 'cpu'; "
                             "use backend='cuda' or 'auto', or copy it to the host")
        return "cpu"
    if name == "cuda" or device:
        if not _cuda.status()[0]:
            raise ValueError(f"{layer}: the 'cuda' backend is not available: {_cuda.status()[1]}")
        return "cuda"
    if not (_probe or backend == "auto"):
        return "cpu"
    ok, why = _cuda.status()
    if not ok:
        if not _warned[0]:
            _warned[0] = True
            warnings.warn(f"fastconv: backend 'auto' runs on the CPU: {why}", RuntimeWarning,
                          stacklevel=3)
        return "cpu"
    return "maybe"
