"""Backend selection.  Only the CPU backend exists so far; "auto" resolves to it.

GPU detection is lazy: nothing here imports numba.cuda at import time.
"""
_BACKENDS = ("auto", "cpu", "cuda")
_backend = "auto"


def set_backend(name):
    """Choose "cpu", "cuda" or "auto" for every later call."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"set_backend: expected one of {list(_BACKENDS)}, got {name!r}")
    if name == "cuda":
        raise ValueError("set_backend: the 'cuda' backend has no kernels in this version of "
                         "fastconv; use 'cpu' or 'auto'")
    _backend = name


def get_backend():
    """The backend calls run on ("cpu" while no GPU kernels exist)."""
    return "cpu"


def resolve(name, caller):
    """The backend a call with ``backend=name`` runs on, or a clear error."""
    if name not in _BACKENDS:
        raise ValueError(f"{caller}: backend must be one of {list(_BACKENDS)}, got {name!r}")
    if name == "cuda":
        raise ValueError(f"{caller}: the 'cuda' backend has no kernels in this version of "
                         "fastconv; use 'cpu' or 'auto'")
    return "cpu"
