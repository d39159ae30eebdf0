"""CPU kernels: one module per kernel family, each a set of ``@njit(parallel=True)``
functions over float32 C-contiguous arrays.  Every kernel takes its output
(and any workspace) as arguments, so the API layer owns all allocation."""

# fastmath without "nnan"/"ninf": reductions vectorize, NaN and Inf still propagate.
FASTMATH = {"nsz", "arcp", "contract", "afn", "reassoc"}

# Epilogue activation codes shared by every kernel family.
ACT_NONE = 0
ACT_RELU = 1
ACT_RELU6 = 2
ACT_HARDSWISH = 3
