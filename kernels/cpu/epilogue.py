"""Epilogue helpers inlined into the kernels: activation by code.

Comparisons are written so that NaN falls through unchanged, as in PyTorch
(``relu(nan) == nan``, ``relu6(nan) == nan``, ``hardswish(nan) == nan``).
"""
import numpy as np
from numba import njit

ZERO = np.float32(0.0)
THREE = np.float32(3.0)
SIX = np.float32(6.0)
SIXTH = np.float32(1.0 / 6.0)


@njit(inline="always")
def activate(v, act):
    """act 0: v; 1: max(v, 0); 2: min(max(v, 0), 6); 3: v * min(max(v + 3, 0), 6) / 6."""
    if act == 1:
        if v < ZERO:
            v = ZERO
    elif act == 2:
        if v < ZERO:
            v = ZERO
        elif v > SIX:
            v = SIX
    elif act == 3:
        g = v + THREE
        if g < ZERO:
            g = ZERO
        elif g > SIX:
            g = SIX
        v = v * g * SIXTH
    return v


@njit(cache=True)
def store_row(dst, src, bk, act):
    """dst[q] = act(src[q] + bk); the branch on act sits outside the loops so each
    loop sees a constant code and vectorizes (dst may be src).  An ordinary call,
    not inlined: kernels call it from several places, and inlining every copy
    more than doubled their compile time for no run-time gain."""
    n = dst.shape[0]
    if act == 0:
        for q in range(n):
            dst[q] = src[q] + bk
    elif act == 1:
        for q in range(n):
            dst[q] = activate(src[q] + bk, 1)
    elif act == 2:
        for q in range(n):
            dst[q] = activate(src[q] + bk, 2)
    else:
        for q in range(n):
            dst[q] = activate(src[q] + bk, 3)


@njit(cache=True)
def store_row_res(dst, src, bk, res, act):
    """dst[q] = act(src[q] + bk + res[q]), the residual (shortcut) add fused."""
    n = dst.shape[0]
    if act == 0:
        for q in range(n):
            dst[q] = src[q] + bk + res[q]
    elif act == 1:
        for q in range(n):
            dst[q] = activate(src[q] + bk + res[q], 1)
    elif act == 2:
        for q in range(n):
            dst[q] = activate(src[q] + bk + res[q], 2)
    else:
        for q in range(n):
            dst[q] = activate(src[q] + bk + res[q], 3)


@njit(cache=True)
def apply_row(row, bk, act):
    """row[q] = act(row[q] + bk) in place.

    Its own function, not store_row(row, row, ...): given two arrays LLVM
    guards the vector loop with an overlap check, and identical arrays fail it,
    so every in-place epilogue ran the scalar loop -- with relu6/hardswish's
    data-dependent branches, 3-4 ns an element (a 112x112x96 MobileNet
    expansion spent 4 ms there instead of 0.15 ms)."""
    n = row.shape[0]
    if act == 0:
        for q in range(n):
            row[q] = row[q] + bk
    elif act == 1:
        for q in range(n):
            row[q] = activate(row[q] + bk, 1)
    elif act == 2:
        for q in range(n):
            row[q] = activate(row[q] + bk, 2)
    else:
        for q in range(n):
            row[q] = activate(row[q] + bk, 3)


@njit(cache=True)
def apply_row_res(row, bk, res, act):
    """row[q] = act(row[q] + bk + res[q]) in place (res a different array)."""
    n = row.shape[0]
    if act == 0:
        for q in range(n):
            row[q] = row[q] + bk + res[q]
    elif act == 1:
        for q in range(n):
            row[q] = activate(row[q] + bk + res[q], 1)
    elif act == 2:
        for q in range(n):
            row[q] = activate(row[q] + bk + res[q], 2)
    else:
        for q in range(n):
            row[q] = activate(row[q] + bk + res[q], 3)


@njit(inline="always")
def epilogue_tile(y3, n, k0, k1, p0, T, b, act, res3, has_res):
    """In place on the output tile y3[n, k0:k1, p0:p0+T]: bias, residual, activation."""
    for k in range(k0, k1):
        row = y3[n, k, p0:p0 + T]
        if has_res:
            apply_row_res(row, b[k], res3[n, k, p0:p0 + T], act)
        else:
            apply_row(row, b[k], act)
