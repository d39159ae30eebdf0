"""Device functions shared by the CUDA kernels: the fused activation by code.

Codes as on the CPU (kernels/cpu/__init__.py): 0 none, 1 relu, 2 relu6,
3 hardswish; NaN passes through unchanged, as in PyTorch.
"""
from numba import cuda, float32


@cuda.jit(device=True, inline=True)
def activate(v, act):
    if act == 1:
        if v < float32(0):
            v = float32(0)
    elif act == 2:
        if v < float32(0):
            v = float32(0)
        elif v > float32(6):
            v = float32(6)
    elif act == 3:
        g = v + float32(3)
        if g < float32(0):
            g = float32(0)
        elif g > float32(6):
            g = float32(6)
        v = v * g / float32(6)
    return v
