"""numba.cuda twins of the CPU kernel families.

No family has a CUDA variant yet; the planner therefore only offers the CPU
backend.  Nothing here imports numba.cuda, so importing fastconv never probes
for a GPU.
"""
