"""numba.cuda twins of the CPU kernel families.

Importing this package imports numba.cuda; fastconv only does so when the
CUDA backend is first asked for (fastconv/_cuda.py), so importing fastconv
never probes for a GPU.  Families: implicit-GEMM convolution (two tilings),
direct, Winograd F(2x2)/F(4x4), depthwise, int8 (dp4a), sparse CSR, pooling,
and the elementwise ops a device-resident model needs between fused layers;
every one with the fused bias/residual/activation epilogue (``epilogue.py``).
"""
