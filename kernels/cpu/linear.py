"""Fully connected layer: y = act(x @ w.T + b).

x: (N, F_in), w: (F_out, F_in).  Tasks are blocks of output features; each computes
yt[o0:o1] = w[o0:o1] @ x.T with single-threaded SGEMM (np.dot) into the transposed
workspace yt (F_out, N), then the epilogue writes y[n, o] = act(yt[o, n] + b[o]).
"""
import numpy as np
from numba import njit, prange

from . import FASTMATH
from .epilogue import activate


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def linear(x, w, b, y, yt, oblock, act):
    """y (N, F_out) = act(x (N, F_in) @ w.T + b); yt: (F_out, N) workspace."""
    N = x.shape[0]
    F_out = w.shape[0]
    xt = x.T
    nb = (F_out + oblock - 1) // oblock
    for t in prange(nb):
        o0 = t * oblock
        o1 = min(o0 + oblock, F_out)
        np.dot(w[o0:o1], xt, yt[o0:o1])
        for o in range(o0, o1):
            bo = b[o]
            for n in range(N):
                y[n, o] = activate(yt[o, n] + bo, act)
