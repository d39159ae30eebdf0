"""Sparse (pruned) convolution and linear layers with CSR weights.

Convolution: row k of the CSR matrix holds output channel k's nonzero taps,
column = (absolute input channel c, r, s), so

    y[n, k, p, q] = act(b[k] + sum_(i in row k) vals[i] * xp[n, c_i, p*sh + r_i*dh, q*sw + s_i*dw] (+ res))

A task is (image, output channel, block of output rows); each output row
accumulates, nonzero by nonzero, a scaled input row segment into a row
buffer that stays in L1 (unit stride when sw == 1, so it vectorizes), then
the epilogue writes it once.  Work is proportional to the nonzeros: at 90 %
sparsity a tenth of the dense multiply-adds, with no im2col copy.

Stride 1 takes a faster route (``sparse_conv2d_flat``): on the padded input
viewed flat, tap (c, r, s) of every output pixel is one contiguous run,

    acc[p*WP + q] += v * xp_flat[c, (p + r*dh)*WP + q + s*dw],   L = (OH-1)*WP + OW elements,

so each nonzero is one long unit-stride multiply-add over the whole plane
(columns q >= OW of the accumulator are scratch and never stored), four
four nonzeros per pass so the accumulator is loaded and stored once per four
(eight measured no faster: the input planes stream from L2 either way).

Linear: yT[o, n] = act(b[o] + sum_(i in row o) vals[i] * xT[col_i, n]).
"""
import numba
from numba import njit, prange

from . import FASTMATH
from .epilogue import apply_row, store_row, store_row_res


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def sparse_conv2d(xp, indptr, chan, roff, coff, vals, b, y, sh, sw, act, res, has_res, rows,
                  row_ws):
    """xp (N, C, HP, WP) padded input; CSR (indptr (K+1,), chan/roff/coff/vals (nnz,)) with
    roff = r*dh, coff = s*dw; y/res (N, K, OH, OW); rows: output rows per task;
    row_ws (threads, >= OW) float32."""
    N = xp.shape[0]
    K, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    nrb = (OH + rows - 1) // rows
    for t in prange(N * K * nrb):
        rb = t % nrb
        k = (t // nrb) % K
        n = t // (nrb * K)
        acc = row_ws[numba.get_thread_id(), :OW]
        for p in range(rb * rows, min(OH, (rb + 1) * rows)):
            for q in range(OW):
                acc[q] = 0.0
            for i in range(indptr[k], indptr[k + 1]):
                v = vals[i]
                src = xp[n, chan[i], p * sh + roff[i], coff[i]:]
                if sw == 1:
                    for q in range(OW):
                        acc[q] += v * src[q]
                else:
                    for q in range(OW):
                        acc[q] += v * src[q * sw]
            if has_res:
                store_row_res(y[n, k, p], acc, b[k], res[n, k, p], act)
            else:
                store_row(y[n, k, p], acc, b[k], act)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def sparse_conv2d_flat(xf, WP, indptr, offs, vals, b, y, act, res, has_res, plane_ws):
    """Stride-1 sparse conv: xf (N, C*HP*WP) the padded input flattened per image,
    offs[i] = c*HP*WP + r*dh*WP + s*dw; y/res (N, K, OH, OW);
    plane_ws (threads, >= OH*WP) float32."""
    N = xf.shape[0]
    K, OH, OW = y.shape[1], y.shape[2], y.shape[3]
    L = (OH - 1) * WP + OW
    for t in prange(N * K):
        k = t % K
        n = t // K
        acc = plane_ws[numba.get_thread_id(), :L]
        for q in range(L):
            acc[q] = 0.0
        x = xf[n]
        i = indptr[k]
        end = indptr[k + 1]
        while i + 4 <= end:
            v0, v1, v2, v3 = vals[i], vals[i + 1], vals[i + 2], vals[i + 3]
            s0 = x[offs[i]:offs[i] + L]
            s1 = x[offs[i + 1]:offs[i + 1] + L]
            s2 = x[offs[i + 2]:offs[i + 2] + L]
            s3 = x[offs[i + 3]:offs[i + 3] + L]
            for q in range(L):
                acc[q] += v0 * s0[q] + v1 * s1[q] + v2 * s2[q] + v3 * s3[q]
            i += 4
        while i < end:
            v0 = vals[i]
            s0 = x[offs[i]:offs[i] + L]
            for q in range(L):
                acc[q] += v0 * s0[q]
            i += 1
        for p in range(OH):
            if has_res:
                store_row_res(y[n, k, p], acc[p * WP:p * WP + OW], b[k], res[n, k, p], act)
            else:
                store_row(y[n, k, p], acc[p * WP:p * WP + OW], b[k], act)


@njit(parallel=True, cache=True, fastmath=FASTMATH)
def sparse_linear(xT, indptr, cols, vals, b, yT, act):
    """yT (O, N) = act(W_csr (O, F) @ xT (F, N) + b), one output feature per task."""
    O = yT.shape[0]
    for o in prange(O):
        acc = yT[o]
        for j in range(acc.shape[0]):
            acc[j] = 0.0
        for i in range(indptr[o], indptr[o + 1]):
            v = vals[i]
            src = xT[cols[i]]
            for j in range(acc.shape[0]):
                acc[j] += v * src[j]
        apply_row(acc, b[o], act)
