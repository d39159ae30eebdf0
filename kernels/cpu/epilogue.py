"""Epilogue helpers inlined into the kernels: activation by code.

Comparisons are written so that NaN falls through unchanged, as in PyTorch
(``relu(nan) == nan``, ``relu6(nan) == nan``).
"""
import numpy as np
from numba import njit

ZERO = np.float32(0.0)
SIX = np.float32(6.0)


@njit(inline="always")
def activate(v, act):
    """act 0: identity; 1: max(v, 0); 2: min(max(v, 0), 6)."""
    if act == 1:
        if v < ZERO:
            v = ZERO
    elif act == 2:
        if v < ZERO:
            v = ZERO
        elif v > SIX:
            v = SIX
    return v
