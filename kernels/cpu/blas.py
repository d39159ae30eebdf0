"""SGEMM with leading dimensions, callable from Numba kernels.

``np.dot`` inside ``@njit`` needs contiguous operands and a contiguous output,
so a kernel that wants to multiply a sub-block of a larger array (a pixel
tile of an image, a slice of output channels written straight into the output
tensor) would have to copy.  ``sgemm_rm`` calls the same SciPy BLAS that
``np.dot`` uses, through Numba's own ``numba_xxgemm`` helper, with explicit
offsets and leading dimensions, so no copy is needed.  Being an external
symbol (not a baked-in address), it survives Numba's on-disk cache.

Row-major  C[m, n] = A[m, k] @ B[k, n] + beta * C  is the column-major product
C^T = B^T A^T, which is what is passed to BLAS.
"""
import numpy as np
from numba import njit, types
from numba.extending import intrinsic
from numba.np.linalg import _BLAS

_BLAS()  # raises a clear error if SciPy's BLAS is missing
_xxgemm = _BLAS.numba_xxgemm(types.float32)

KIND_S = np.int8(ord("s"))
NO_TRANS = np.int8(ord("N"))


@intrinsic
def address(typingctx, arr, offset):
    """Pointer to element ``offset`` of the (flattened, contiguous) array ``arr``."""
    sig = types.CPointer(arr.dtype)(arr, types.intp)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.gep(ary.data, [args[1]])
    return sig, codegen


@njit(inline="always")
def sgemm_rm(m, n, k, a, a_off, lda, b, b_off, ldb, c, c_off, ldc, beta, scalars):
    """C = A @ B + beta*C on row-major sub-blocks given by element offsets and leading dims.

    scalars: a float32 array of >= 2 elements owned by the calling thread (alpha, beta).
    """
    scalars[0] = 1.0
    scalars[1] = beta
    _xxgemm(KIND_S, NO_TRANS, NO_TRANS, n, m, k, address(scalars, 0), address(b, b_off), ldb,
            address(a, a_off), lda, address(scalars, 1), address(c, c_off), ldc)


@njit(cache=True)
def selftest():
    """A tiny product, run once on the calling thread so BLAS is bound before any parallel use."""
    a = np.arange(6, dtype=np.float32).reshape((2, 3))
    b = np.arange(12, dtype=np.float32).reshape((3, 4))
    c = np.zeros((2, 4), np.float32)
    s = np.zeros(2, np.float32)
    sgemm_rm(2, 4, 3, a, 0, 3, b, 0, 4, c, 0, 4, 0.0, s)
    return np.abs(c - np.dot(a, b)).max()
