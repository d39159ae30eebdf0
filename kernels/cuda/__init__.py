"""numba.cuda twins of the CPU kernel families.

Importing this package imports numba.cuda; fastconv only does so when the
CUDA backend is first asked for (fastconv/_cuda.py), so importing fastconv
never probes for a GPU.  Families so far: implicit-GEMM convolution (any
shape, groups, fused bias/residual/activation), depthwise, pooling, and the
small helpers a device-resident model needs.
"""
