"""Elementwise kernels a device-resident model needs between its fused layers.

unary:  y = act(x) with the epilogue codes, or clip(x, lo, hi)
binary: y = a (op) b for same-shape operands (add, sub, mul), or b a per-channel
        vector broadcast over (N, C, H*W) (a squeeze-excitation scale)

Launch: grid ceil(size / 256), block 256, on flat views.
"""
from numba import cuda

from .epilogue import activate


@cuda.jit
def unary(x, y, act, lo, hi, clip):
    i = cuda.grid(1)
    if i < y.size:
        v = x[i]
        if clip:
            if v < lo:
                v = lo
            elif v > hi:
                v = hi
            y[i] = v
        else:
            y[i] = activate(v, act)


@cuda.jit
def binary(a, b, y, op, per_channel, C, HW):
    """op 0 add, 1 sub, 2 mul; per_channel: b has one value per (n, c) plane."""
    i = cuda.grid(1)
    if i < y.size:
        bv = b[i // HW] if per_channel else b[i]
        av = a[i]
        if op == 0:
            y[i] = av + bv
        elif op == 1:
            y[i] = av - bv
        else:
            y[i] = av * bv
