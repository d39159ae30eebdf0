"""Input validation and conversion for the API layer.

Every public entry point converts its inputs here once, with messages that name
the layer and say what was expected and what arrived.  Nothing here writes to a
caller's array: conversions copy, and kernels only ever read the result.
"""
import numbers

import numpy as np

from .kernels.cpu import ACT_HARDSWISH, ACT_NONE, ACT_RELU, ACT_RELU6


def _is_torch(x):
    t = type(x)
    return t.__module__.startswith("torch") and t.__name__ in ("Tensor", "Parameter")


def to_numpy(x, layer, what="input"):
    """A NumPy view/copy of an array-like or torch tensor (no dtype change yet)."""
    if _is_torch(x):
        if x.requires_grad:
            x = x.detach()
        if x.device.type != "cpu":
            raise ValueError(f"{layer}: {what} is a torch tensor on {x.device}; "
                             "expected a CPU tensor (the CPU backend is in use)")
        if x.is_floating_point() and x.dtype not in (_torch().float32, _torch().float64):
            raise TypeError(f"{layer}: {what} dtype must be float32, got {x.dtype}")
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__array__") or isinstance(x, (list, tuple)):
        return np.asarray(x)
    raise TypeError(f"{layer}: {what} must be a NumPy array or torch tensor, "
                    f"got {type(x).__name__}")


def _torch():
    import torch
    return torch


def as_float32(x, layer, what="input", ndim=None):
    """float32, C-contiguous NumPy array; float64 is converted, other dtypes rejected."""
    a = to_numpy(x, layer, what)
    if a.dtype == np.float32:
        pass
    elif a.dtype == np.float64:
        a = a.astype(np.float32)
    elif a.dtype == np.float16:
        raise TypeError(f"{layer}: {what} dtype must be float32 (float64 is converted), "
                        f"got float16; convert it explicitly with .astype(np.float32)")
    else:
        raise TypeError(f"{layer}: {what} dtype must be float32 (float64 is converted), "
                        f"got {a.dtype}")
    if ndim is not None and a.ndim not in (ndim if isinstance(ndim, tuple) else (ndim,)):
        want = " or ".join(f"{d}-D" for d in (ndim if isinstance(ndim, tuple) else (ndim,)))
        raise ValueError(f"{layer}: {what} must be {want}, got {a.ndim}-D with shape "
                         f"{tuple(a.shape)}")
    if not a.flags.c_contiguous or not a.flags.aligned:
        a = np.ascontiguousarray(a)
    return a


def wrap_like(y, original):
    """Return y as the same kind of array as the caller passed (torch in, torch out)."""
    if _is_torch(original):
        return _torch().from_numpy(y)
    return y


def pair(v, layer, name, minimum=None):
    """An int or a pair of ints, as an (h, w) tuple, checked against a minimum."""
    if isinstance(v, numbers.Integral) and not isinstance(v, bool):
        out = (int(v), int(v))
    elif isinstance(v, (tuple, list)) and len(v) == 2 and all(
            isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in v):
        out = (int(v[0]), int(v[1]))
    else:
        raise TypeError(f"{layer}: {name} must be an int or a pair of ints, got {v!r}")
    if minimum is not None and min(out) < minimum:
        raise ValueError(f"{layer}: {name} must be >= {minimum}, got {v!r}")
    return out


def padding4(padding, kernel, dilation, stride, layer):
    """Resolve padding (int, pair, 4-tuple (top, bottom, left, right), "same", "valid")."""
    if isinstance(padding, str):
        if padding == "valid":
            return (0, 0, 0, 0)
        if padding == "same":
            if stride != (1, 1):
                raise ValueError(f"{layer}: padding='same' needs stride 1 (as in PyTorch), "
                                 f"got stride={stride}")
            pads = []
            for k, d in zip(kernel, dilation):
                total = d * (k - 1)
                pads += [total // 2, total - total // 2]  # extra on the bottom/right, as PyTorch
            return tuple(pads)
        raise ValueError(f"{layer}: padding must be an int, a pair, 'same' or 'valid', "
                         f"got {padding!r}")
    if isinstance(padding, (tuple, list)) and len(padding) == 4:
        if not all(isinstance(e, numbers.Integral) and not isinstance(e, bool) for e in padding):
            raise TypeError(f"{layer}: padding must hold ints, got {padding!r}")
        out = tuple(int(e) for e in padding)
        if min(out) < 0:
            raise ValueError(f"{layer}: padding must be >= 0, got {padding!r}")
        return out
    ph, pw = pair(padding, layer, "padding", minimum=0)
    return (ph, ph, pw, pw)


# names -> the epilogue codes every kernel understands (kernels/cpu/epilogue.py)
ACTIVATIONS = {None: ACT_NONE, "none": ACT_NONE, "identity": ACT_NONE, "relu": ACT_RELU,
               "relu6": ACT_RELU6, "hardswish": ACT_HARDSWISH}


def activation_code(activation, layer):
    if not isinstance(activation, (str, type(None))) or activation not in ACTIVATIONS:
        raise ValueError(f"{layer}: activation must be one of None, 'relu', 'relu6', "
                         f"'hardswish', got {activation!r}")
    return ACTIVATIONS[activation]
