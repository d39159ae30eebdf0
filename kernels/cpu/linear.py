"""Fully connected layer: y = act(x @ w.T + b).

x: (N, F_in), w: (F_out, F_in).  Tasks are blocks of output features; each computes
yt[o0:o1] = w[o0:o1] @ x.T with single-threaded SGEMM (np.dot) into the transposed
workspace yt (F_out, N), then the epilogue writes y[n, o] = act(yt[o, n] + b[o]).

A few rows (a classifier at batch 1..8) take ``linear_rows`` instead: each weight row
is read once, from memory, and dotted with every input row while it sits in L1.  The
SGEMM path streamed a batch-1 classifier's weights at about half the rate (cold: 0.43
against 0.24 ms for 1280 -> 1000), packing them before a product with one column.
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


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def linear_rows(x, w, b, y, oblock, act):
    """y (N, F_out) = act(x (N, F_in) @ w.T + b) as N dot products per weight row:

        y[n, o] = act(b[o] + sum_i w[o, i] * x[n, i])

    tasks are blocks of oblock output features; each weight row is read once."""
    N = x.shape[0]
    F_out, F_in = w.shape
    nb = (F_out + oblock - 1) // oblock
    for t in prange(nb):
        for o in range(t * oblock, min(F_out, (t + 1) * oblock)):
            wr = w[o]
            for n in range(N):
                xr = x[n]
                acc = np.float32(0.0)
                for i in range(F_in):
                    acc += wr[i] * xr[i]
                y[n, o] = activate(acc + b[o], act)
